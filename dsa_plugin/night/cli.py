"""``dsa translate``: precompute the night versions of the selected anchors (the night cache)."""

from __future__ import annotations

import argparse
import os
import sys

from dsa_plugin.night.selection import DEFAULT_PREFIX, DEFAULT_RATIO


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dsa translate",
        description=(
            "Translate the anchors selected by the md5 rule (label prefix + ratio) into night with a frozen "
            "generator and store them with a manifest. Resumable: rerun the same command after a kill. "
            "Sharded under torchrun (each rank translates a slice; rank 0 writes the manifest)."
        ),
    )
    p.add_argument(
        "--generator", required=True, help="generator checkpoint: path or URL (reference 4-key file or state dict)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="retrieval-SfM training db (.pkl); the query images of its train and val splits")
    src.add_argument("--data-root", help="data root holding train/<db-name>/<db-name>.pkl (cirtorch's layout)")
    src.add_argument("--images", help="text file with one image path per line (relative to the list's folder)")
    p.add_argument("--db-name", default="retrieval-SfM-120k", help="db name under --data-root (default: %(default)s)")
    p.add_argument("--ims-root", default=None, help="image folder of the db (default: ims/ beside the .pkl)")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument(
        "--ratio", type=float, default=DEFAULT_RATIO, help="fraction of anchors made night (default: %(default)s)"
    )
    p.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="label prefix of night-capable images (default: %(default)s)"
    )
    p.add_argument("--image-size", type=int, default=362,
                   help="longer side of the inputs, as in training (default: %(default)s; 0 = full size)")
    p.add_argument(
        "--format", choices=("png", "pt"), default="png", help="png: 16-bit; pt: float32 (default: %(default)s)"
    )
    p.add_argument(
        "--clahe",
        type=float,
        default=None,
        metavar="CLIP",
        help="store CLAHE(G(x)) with this clip limit, 8x8 tiles (default: raw generator output, what training expects)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun, cuda means cuda:LOCAL_RANK)")
    p.add_argument(
        "--batch-size", type=int, default=4, help="images of equal size translated together (default: %(default)s)"
    )
    p.add_argument("--workers", type=int, default=2, help="threads decoding/encoding images (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="run the generator under autocast (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild over a cache made with other settings (deletes only the files listed in its manifest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from dsa_plugin.data.lists import anchor_images_from_db, read_image_list
    from dsa_plugin.night.build import build_night_cache
    from dsa_plugin.night.cache import NightCacheError, clahe_settings
    from dsa_plugin.night.translator import NightTranslator, TranslatorError

    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    from dsa_plugin.core.devices import check_device

    try:
        check_device(device)
        if args.images:
            images, source = read_image_list(args.images), os.path.abspath(args.images)
        else:
            if args.db:
                pkl = args.db
            else:
                from dsa_plugin.data.sfm import db_paths

                pkl = os.fspath(db_paths(args.data_root, args.db_name)[0])
            images, source = anchor_images_from_db(pkl, args.ims_root), os.path.abspath(pkl)
        translator = NightTranslator.from_checkpoint(args.generator, device=device, amp=args.amp)
        cache = build_night_cache(
            args.out,
            images,
            translator,
            ratio=args.ratio,
            prefix=args.prefix,
            image_size=args.image_size or None,
            clahe=clahe_settings(args.clahe) if args.clahe is not None else None,
            fmt=args.format,
            batch_size=args.batch_size,
            workers=args.workers,
            overwrite=args.overwrite,
            source=source,
            progress=not args.no_progress,
        )
    except (NightCacheError, TranslatorError, ValueError, OSError) as err:
        print(f"dsa translate: error: {err}", file=sys.stderr)
        return 2
    if cache is not None:
        print(f"{len(cache)} night images of {len(images)} candidates in {args.out} "
              f"(ratio {args.ratio}, prefix {args.prefix!r}, generator {translator.fingerprint[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
