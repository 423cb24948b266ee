"""``dsa gan-train``: train a HEDN GAN / HED GAN / CycleGAN day->night generator.

Examples::

    dsa gan-train --config configs/hedngan.yaml data.day=lists/day.txt data.night=lists/night.txt
    dsa gan-train --config tiny --out runs/tiny data.day=photos/day data.night=photos/night
    torchrun --nproc_per_node 2 -m dsa_plugin.gan.cli --config configs/hedngan.yaml --device cuda ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from dsa_plugin.core.config import ConfigError


def _parser() -> argparse.ArgumentParser:
    from dsa_plugin.gan.config import PRESETS

    p = argparse.ArgumentParser(
        prog="dsa gan-train",
        description="Train a day->night generator (HEDN GAN, HED GAN or CycleGAN) on unpaired day/night images. "
                    "Running the same command again resumes from the last checkpoint in --out.",
        epilog="Overrides use dotted keys, e.g. data.crop_size=128 train.max_iterations=1000 "
               "model.hed_weights=hed.pth. Run with --list-keys to see every key.")
    p.add_argument("--config", default="hedngan",
                   help=f"YAML config file or preset name ({', '.join(sorted(PRESETS))}); default hedngan")
    p.add_argument("--out", default=None, help="output directory (default runs/gan-<config name>)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (overrides the config's device)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a training state")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-keys", action="store_true", help="print every config key with its value and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


#: Step sizes that must be positive finite numbers (a negative or NaN rate trains garbage silently).
RATE_KEYS = ("optim.lr", "optim.detector_lr")


def _check_rates(cfg, get_key) -> None:
    import math

    for key in RATE_KEYS:
        try:
            value = get_key(cfg, key)
        except (KeyError, AttributeError, ConfigError):
            continue
        if isinstance(value, str):
            raise ConfigError(f"{key} must be a number, got the string {value!r} (YAML reads 2e-4 as text; "
                              "write 2.0e-4 or 0.0002)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{key} must be a positive finite number, got {value!r}")


def _train(args: argparse.Namespace):
    """The run ``args`` ask for: its ``TrainResult``, or ``None`` after ``--list-keys``."""
    from dsa_plugin.gan.config import get_key, load_config
    from dsa_plugin.gan.trainer import train

    overrides = list(args.overrides)
    if args.device:
        from dsa_plugin.core.devices import check_device

        try:
            check_device(args.device)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        overrides.append(f"device={args.device}")
    cfg = load_config(args.config, overrides)
    _check_rates(cfg, get_key)
    if args.list_keys:
        for key in cfg.keys():
            print(f"{key} = {get_key(cfg, key)!r}")
        return None
    out = args.out or f"runs/gan-{Path(str(args.config)).stem}"
    return train(cfg, out, resume=not args.no_resume, progress=False if args.no_progress else None)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dsa_plugin.gan.data import GanDataError
    from dsa_plugin.gan.state import ResumeError
    from dsa_plugin.gan.summary import format_summary
    from dsa_plugin.models.checkpoint_files import CheckpointError

    try:
        result = _train(args)
    except (ConfigError, GanDataError, ResumeError) as err:
        print(f"dsa gan-train: error: {err}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as err:
        print(f"dsa gan-train: error: config {args.config}: not UTF-8 text ({err.reason} at byte {err.start})",
              file=sys.stderr)
        return 2
    except OSError as err:
        # an --out that is a file, a read-only folder, a full disk: name the path, no traceback
        print(f"dsa gan-train: error: {err.filename or args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"dsa gan-train: error: {err}", file=sys.stderr)
        return 2
    if result is not None and int(os.environ.get("RANK", "0")) == 0:  # torchrun: only rank 0 reports
        print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
