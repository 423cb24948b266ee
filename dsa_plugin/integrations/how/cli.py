"""``dsa how-train <params.yml> [HOW's train options]``: HOW's own ``demo_how.py train``, with DSA.

Locates and imports HOW, loads its YAML parameters (``__template__`` chains, with the
``configs/how/`` fallback), validates the ``dsa:`` section and the data before anything is
downloaded, and runs HOW's ``demo_how.main(["train", ...])`` inside :func:`how_runtime`.
"""

from __future__ import annotations

import argparse
import sys
from urllib.error import URLError

from dsa_plugin.core.config import ConfigError, DSAConfig
from dsa_plugin.core.safe_pickle import PickleFileError
from dsa_plugin.integrations.how.locate import HOW_SRC_ENV, HOWIntegrationError, import_how, load_demo, locate_how
from dsa_plugin.integrations.how.params import (
    check_data_pickles,
    check_downloads,
    check_generator,
    check_validation_pickles,
    data_folder,
    how_device,
    load_params,
    resolve_params_path,
    template_fallback,
    validate_params,
)
from dsa_plugin.integrations.how.runtime import how_runtime
from dsa_plugin.integrations.how.tuples import check_device

HOW_TRAIN_OPTIONS = (
    "--experiment/-e NAME, --epochs N, --architecture ARCH, --skip-layer N, "
    "--loss-margin/-lm M, --data-folder PATH, --exp-folder PATH"
)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsa how-train",
        allow_abbrev=False,  # an abbreviation must not swallow one of HOW's options
        description="Run HOW's own training (examples/demo_how.py train) with Dark Side Augmentation "
        "configured by a `dsa:` section in HOW's YAML parameters.",
        epilog=f"Any other option goes to HOW's train command: {HOW_TRAIN_OPTIONS}. "
        f"`dsa:` keys: {', '.join(DSAConfig.keys())}.",
    )
    parser.add_argument("parameters", help="HOW parameter file (.yml) or HOW's dotted name such as eccv20.how_r18")
    parser.add_argument("--how-src", metavar="DIR", default=None,
                        help=f"HOW checkout (default: ${HOW_SRC_ENV}, else the importable 'how' package)")
    parser.add_argument("--num-workers", metavar="N", type=int, default=None,
                        help="DataLoader workers for HOW's extraction loaders (HOW's default: 6)")
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args, how_argv = parser.parse_known_args(argv)
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers must be >= 0, got {args.num_workers}")
    try:
        root = locate_how(args.how_src)
        modules = import_how(root)
        params_path = resolve_params_path(args.parameters, root)
        if not params_path.is_file():
            raise ConfigError(f"HOW parameter file not found: {params_path}")
        with template_fallback(modules["io_helpers"], root):
            params = load_params(modules["io_helpers"], params_path)
            config = validate_params(params, params_path)
            check_generator(config, params_path)
            folder = data_folder(params, how_argv, root)
            check_data_pickles(folder)
            check_validation_pickles(params)
            if config is not None:
                check_device(config, how_device(params))  # HOW checks it only after its downloads
            demo = load_demo(root)
            check_downloads(params, folder, getattr(demo, "DATASET_URL", ""))
            cpu = how_device(params) == "cpu" or not _cuda_available()
            with how_runtime(modules, config, num_workers=args.num_workers, cpu=cpu):
                demo.main(["train", str(params_path), *how_argv])
    except (ConfigError, HOWIntegrationError, PickleFileError) as err:
        print(f"dsa how-train: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except URLError as err:  # a download HOW starts after the pre-flight check (the server went away)
        print(f"dsa how-train: error: HOW's download failed: {' '.join(str(err.reason).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
