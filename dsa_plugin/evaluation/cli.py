"""``dsa evaluate``: retrieval mAP of an embedding network on named test sets or on folders.

Examples::

    dsa evaluate --checkpoint hedngan_embed_vgg16.pth --whitening hedngan_embed_vgg16_lw.pkl \\
        --datasets 247tokyo1k,roxford5k,rparis6k --data-root ~/cirtorch-data --device cuda
    dsa evaluate --arch gem_small --random-init --folder ../shared/data/amos-daynight --role eval \\
        --image-size 256 --out amos.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

from dsa_plugin.core.files import write_json
from dsa_plugin.evaluation.descriptors import DEFAULT_SCALES
from dsa_plugin.evaluation.networks import MAX_OUTPUTDIM


def _scales(text: str) -> list[float]:
    try:
        vals = [float(eval_scale(s)) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not vals or not all(0 < v <= 4 for v in vals):  # also refuses nan
        raise argparse.ArgumentTypeError(f"scales must be positive factors like 1,0.7071,0.5; got {text!r}")
    return vals


def _int_at_least(minimum: int, what: str, maximum: int | None = None):
    """argparse type: an int >= ``minimum`` (and <= ``maximum``; ``what`` says why, in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} ({what}), got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum} ({what}), got {value}")
        return value

    return parse


def eval_scale(s: str) -> float:
    """'1', '0.5', '1/sqrt2' or '1/2' -> float.

    Example:
        >>> eval_scale("1"), eval_scale("1/2"), round(eval_scale("1/sqrt2"), 4)
        (1.0, 0.5, 0.7071)
    """
    s = s.strip().lower()
    if s in ("1/sqrt2", "1/sqrt(2)"):
        return 1 / math.sqrt(2)
    if "/" in s:
        a, b = s.split("/", 1)
        return float(a) / float(b)
    return float(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dsa evaluate",
        description="Retrieval mAP with the standard protocols (Tokyo 24/7, ROxford5k, RParis6k) or on folders "
        "with labels.csv.",
    )
    net = p.add_argument_group("network")
    net.add_argument("--checkpoint", help="embedding checkpoint path or URL (reference 4-key, "
                     "cirtorch {meta,state_dict}, plugin GeMNet, state dict)")
    net.add_argument(
        "--arch",
        help="build this architecture instead of loading one (gem_small, resnet18/34/50/101/152, vgg11/13/16/19)",
    )
    net.add_argument("--outputdim", type=_int_at_least(1, "descriptor size", MAX_OUTPUTDIM), default=None,
                     help="descriptor size for --arch gem_small (default 128)")
    net.add_argument("--random-init", action="store_true", help="with --arch: random weights (smoke tests, baselines)")
    net.add_argument("--seed", type=_int_at_least(0, "a torch seed", 2 ** 63 - 1), default=0,
                     help="seed for --random-init (default 0)")
    net.add_argument("--whitening", help="published-format *_lw.pkl to apply ({'m': (D,1), 'P': (D,D)})")
    net.add_argument(
        "--learn-whitening", metavar="PKL", help="learn lw whitening from a whitening db {cids, qidxs, pidxs} first"
    )
    net.add_argument("--whitening-ims", metavar="DIR", help="image root of --learn-whitening (default: <pkl dir>/ims)")
    net.add_argument("--save-whitening", metavar="PKL", help="write the learned whitening here (published layout)")
    data = p.add_argument_group("data")
    data.add_argument("--datasets", help="comma-separated named test sets, e.g. 247tokyo1k,roxford5k,rparis6k")
    data.add_argument("--data-root", help="cirtorch data root holding test/<name>/gnd_<name>.pkl and jpg/")
    data.add_argument(
        "--folder",
        action="append",
        default=[],
        help="folder with labels.csv (file, domain, place_id[, role]); repeatable",
    )
    data.add_argument("--role", help="keep only rows of this role in labels.csv (e.g. eval)")
    data.add_argument("--query-domain", default="night", help="folder queries' domain (default night)")
    data.add_argument("--db-domain", default="day", help="folder database domain (default day)")
    pipe = p.add_argument_group("pipeline")
    pipe.add_argument("--image-size", type=_int_at_least(8, "the longest image side in pixels"), default=None,
                      help="longest image side (thumbnail; default: the checkpoint's test settings, else 1024)")
    pipe.add_argument("--scales", type=_scales, default=None,
                      help="multi-scale factors (default: the checkpoint's, else 1,1/sqrt2,1/2)")
    pipe.add_argument("--single-scale", action="store_true", help="shortcut for --scales 1")
    pipe.add_argument("--no-clahe", action="store_true",
                      help="skip CLAHE at test time (default: the checkpoint's choice, else CLAHE clip 1.0)")
    pipe.add_argument(
        "--clahe", action="store_true", help="apply CLAHE even where the checkpoint says it was tested without"
    )
    pipe.add_argument("--clahe-grid", type=_int_at_least(1, "CLAHE tiles per side"), default=None, metavar="N",
                      help="CLAHE tiles per side (default: the checkpoint's, else 8; fewer for small images)")
    pipe.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda if available)",
    )
    pipe.add_argument("--batch-size", type=_int_at_least(1, "images per forward pass"), default=8,
                      help="images of equal size per forward pass (default 8)")
    pipe.add_argument("--no-progress", action="store_true", help="no progress bars")
    pipe.add_argument("--threads", type=_int_at_least(1, "torch CPU threads"), default=None,
                      help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", help="write the results as JSON here")
    return p


def _check_writable(out: str) -> None:
    """Fail before the evaluation, not after it, when ``--out`` cannot be written."""
    folder = Path(out).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: folder {folder} does not exist (or is not a folder)")
    if Path(out).is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name such as results.json")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {out}: folder {folder} is not writable")


def _network(args):
    from dsa_plugin.evaluation.networks import attach_whitening, build_gem_network, load_embedding_network

    if args.checkpoint and args.arch:
        raise SystemExit("dsa evaluate: give either --checkpoint or --arch, not both")
    if args.checkpoint:
        return load_embedding_network(args.checkpoint, args.device, args.whitening), args.checkpoint
    if not args.arch:
        raise SystemExit("dsa evaluate: need --checkpoint PATH|URL, or --arch NAME --random-init")
    if not args.random_init:
        raise SystemExit(
            "dsa evaluate: --arch builds an untrained network; add --random-init to confirm (or use --checkpoint)"
        )
    torch.manual_seed(args.seed)
    net = build_gem_network(args.arch, outputdim=args.outputdim).to(args.device).eval().requires_grad_(False)
    return attach_whitening(net, args.whitening), f"{args.arch} (random init, seed {args.seed})"


def _test_settings(args, net) -> dict:
    """Image size, scales and CLAHE: the flags given, else what the checkpoint records, else defaults."""
    recorded = getattr(net, "test_settings", None) or {}
    if args.no_clahe and args.clahe:
        raise SystemExit("dsa evaluate: give --clahe or --no-clahe, not both")
    clahe = False if args.no_clahe else True if args.clahe else bool(recorded.get("clahe", True))
    scales = [1.0] if args.single_scale else args.scales or recorded.get("scales") or list(DEFAULT_SCALES)
    return {"image_size": args.image_size or recorded.get("image_size") or 1024, "scales": [float(s) for s in scales],
            "clahe": clahe, "clahe_grid": args.clahe_grid or recorded.get("clahe_grid") or 8}


def main(argv: list[str] | None = None) -> int:
    from dsa_plugin.evaluation.datasets import TestSetError
    from dsa_plugin.evaluation.descriptors import ImageReadError
    from dsa_plugin.evaluation.whitening import WhiteningError
    from dsa_plugin.models.checkpoint_files import CheckpointError

    try:
        return _run(argv)
    except (TestSetError, CheckpointError, WhiteningError, ImageReadError, FileNotFoundError, ValueError) as e:
        print(f"dsa evaluate: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. --out in a read-only or missing folder
        print(f"dsa evaluate: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


def _learn_whitening(args: argparse.Namespace, net, kw: dict, out: dict) -> None:
    """--learn-whitening: learn it on a db, attach it to ``net`` (and --save-whitening)."""
    from dsa_plugin.evaluation.networks import attach_whitening
    from dsa_plugin.evaluation.runner import learn_whitening_from_db
    from dsa_plugin.evaluation.whitening import save_whitening

    w = learn_whitening_from_db(net, args.learn_whitening, args.whitening_ims, **kw)
    attach_whitening(net, w)
    out["whitening_learned_from"] = args.learn_whitening
    if args.save_whitening:
        save_whitening(w, args.save_whitening)
        print(f">> whitening written to {args.save_whitening}")


def _evaluate_test_sets(args: argparse.Namespace, net, kw: dict, label: str) -> list[dict]:
    from dsa_plugin.evaluation.report import format_test_sets
    from dsa_plugin.evaluation.runner import evaluate_test_set

    results = [evaluate_test_set(net, name.strip(), args.data_root, **kw)
               for name in args.datasets.split(",") if name.strip()]
    print(format_test_sets(results, label=label))
    return results


def _evaluate_folders(args: argparse.Namespace, net, kw: dict, label: str) -> list[dict]:
    from dsa_plugin.evaluation.report import format_folder
    from dsa_plugin.evaluation.runner import evaluate_folder

    results = []
    for folder in args.folder:
        r = evaluate_folder(net, folder, role=args.role, query_domain=args.query_domain, db_domain=args.db_domain,
                            **kw)
        results.append(r)
        print(format_folder(r, label=label))
    return results


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.datasets and not args.folder:
        raise SystemExit("dsa evaluate: nothing to evaluate; give --datasets (with --data-root) and/or --folder DIR")
    if args.datasets and not args.data_root:
        raise SystemExit("dsa evaluate: --datasets needs --data-root (the directory holding test/<name>/)")
    from dsa_plugin.core.devices import check_device

    check_device(args.device)
    if args.out:
        _check_writable(args.out)
    net, label = _network(args)
    kw = dict(
        device=args.device, batch_size=args.batch_size, progress=not args.no_progress, **_test_settings(args, net)
    )
    out: dict = {"network": label, "settings": {k: v for k, v in kw.items() if k != "progress"}}
    if args.learn_whitening:
        _learn_whitening(args, net, kw, out)
    out["settings"]["whitening"] = args.learn_whitening or args.whitening
    shown = Path(label).name if args.checkpoint else label
    if args.datasets:
        out["test_sets"] = _evaluate_test_sets(args, net, kw, shown)
    if args.folder:
        out["folders"] = _evaluate_folders(args, net, kw, shown)
    if args.out:
        path = write_json(args.out, out)
        print(f">> results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
