"""Epoch preparation of NightTuplesDataset: batched descriptor extraction vs one image at a time.

``create_epoch_tuples`` (anchor selection, anchor and negative-pool extraction, hard negatives)
is timed twice per db with the same seed: ``batch_size=1`` (cirtorch extracts one image at a
time) and ``batch_size=32`` (images of equal size are batched). Both must produce the same
tuples. Dbs:
- ``tiny``: a generated retrieval-SfM-format db (dsa_plugin.data.make_tiny_sfm_db), all images 48x64;
- ``amos``: built from ../shared/data/amos-daynight (place_id as cluster, pairs within a place)
  into a temporary folder (never into the repository); images of 17 webcams, so several sizes.
  Skipped when the photos are absent.

Run: ``python benchmarks/tuples.py [--quick] [--device cpu|cuda] [--amos-dir DIR]``. The last line
is one JSON object; ``speedup`` is the one-by-one wall time / batched wall time on the amos db
(tiny with --quick or without the photos); ``speedup_cpu`` the same with process CPU time (less
sensitive to other tenants on a shared machine; use ``--threads 1`` to make it exact).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsa_plugin.core.config import DSAConfig  # noqa: E402
from dsa_plugin.data import make_tiny_sfm_db  # noqa: E402
from dsa_plugin.data.amos import make_amos_sfm_db  # noqa: E402
from dsa_plugin.training.tuples import NightTuplesDataset  # noqa: E402

DEFAULT_AMOS = REPO.parent / "shared" / "data" / "amos-daynight"


def _net(device: str):
    from dsa_plugin.models.gem import gem_small

    torch.manual_seed(0)
    return gem_small(128).to(device).eval()


def run_db(label: str, root: Path, name: str, imsize: int, qsize: int, poolsize: int, config: DSAConfig,
           device: str, repeats: int, batch: int) -> dict:
    net = _net(device)
    with warnings.catch_warnings():  # warm-up (first conv calls, thread pool) outside the timings
        warnings.simplefilter("ignore")
        NightTuplesDataset(name, "train", imsize=imsize, nnum=0, qsize=2, data_root=root, progress=False).extract(
            range(2), "neg-pool-mine", net, device=device)
    results = {}
    tuples = {}
    for bs in (1, batch):
        times, cpu_times, per_image = [], [], []
        for _ in range(repeats):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = NightTuplesDataset(name, "train", imsize=imsize, nnum=5, qsize=qsize, poolsize=poolsize,
                                        data_root=root, config=config, seed=0, batch_size=bs, progress=False)
            t0, c0 = time.perf_counter(), time.process_time()
            ds.create_epoch_tuples(net, device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            times.append(seconds)
            cpu_times.append(time.process_time() - c0)
            per_image.append(ds.stats["images_extracted"] / seconds)
        tuples[bs] = (ds.qidxs, ds.nidxs)
        results[bs] = {
            "seconds": statistics.median(times),
            "cpu_seconds": statistics.median(cpu_times),
            "images_per_s": statistics.median(per_image),
            "images": ds.stats["images_extracted"],
            "sizes": _sizes(ds),
        }
    one, many = results[1], results[batch]
    return {
        "db": label,
        "images_in_db": len(ds.images),
        "qsize": ds.qsize,
        "poolsize": ds.poolsize,
        "imsize": imsize,
        "distinct_sizes": one["sizes"],
        "images_extracted": one["images"],
        "one_by_one_s": one["seconds"],
        "batched_s": many["seconds"],
        "one_by_one_cpu_s": one["cpu_seconds"],
        "batched_cpu_s": many["cpu_seconds"],
        "speedup_cpu": one["cpu_seconds"] / many["cpu_seconds"],
        "one_by_one_img_s": one["images_per_s"],
        "batched_img_s": many["images_per_s"],
        "speedup": one["seconds"] / many["seconds"],
        "same_tuples": tuples[1] == tuples[batch],
        "batch_size": batch,
        "repeats": repeats,
    }


def _sizes(ds: NightTuplesDataset) -> int:
    from PIL import Image

    sizes = set()
    for path in ds.images:
        with Image.open(path) as img:
            w, h = img.size
        scale = min(1.0, ds.imsize / max(w, h)) if ds.imsize else 1.0
        sizes.add((round(w * scale), round(h * scale)))
    return len(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/tuples.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny db only, 1 repeat (< 1 min)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amos-dir", default=os.environ.get("DSA_AMOS_DIR", str(DEFAULT_AMOS)))
    parser.add_argument("--repeats", type=int, default=None, help="runs per setting, median (3; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--imsize", type=int, default=256, help="longer side of the amos images (362 in the paper)")
    parser.add_argument("--diverse", action="store_true", help="diverse anchors (extracts the anchor pool too)")
    parser.add_argument("--clahe", action="store_true", help="CLAHE on every image")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    config = DSAConfig(diverse_anchors=args.diverse, clahe=args.clahe, qpool_size=10000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dsa-bench-tuples-") as tmp:
        tiny = Path(tmp) / "tiny"
        if args.quick:
            make_tiny_sfm_db(tiny, clusters=12, images_per_cluster=4)
            rows.append(
                run_db("tiny", tiny, "retrieval-SfM-120k", 64, 24, 36, config, args.device, repeats, args.batch_size)
            )
        else:
            make_tiny_sfm_db(tiny, clusters=40, images_per_cluster=6)
            rows.append(
                run_db("tiny", tiny, "retrieval-SfM-120k", 64, 150, 180, config, args.device, repeats, args.batch_size)
            )
            if (Path(args.amos_dir) / "labels.csv").is_file():
                amos = Path(tmp) / "amos"
                make_amos_sfm_db(args.amos_dir, amos)
                rows.append(
                    run_db(
                        "amos",
                        amos,
                        "amos-daynight",
                        args.imsize,
                        150,
                        327,
                        config,
                        args.device,
                        repeats,
                        args.batch_size,
                    )
                )
            else:
                print(f"(amos photos not found at {args.amos_dir}: amos db skipped)")

    print(f"epoch preparation (create_epoch_tuples), device={args.device}, torch threads={torch.get_num_threads()}, "
          f"diverse={args.diverse}, clahe={args.clahe}, net=gem_small(128)")
    header = (
        f"{'db':6s} {'images':>6s} {'sizes':>5s} {'imsize':>6s} {'extracted':>9s} {'1-by-1 s':>9s} {'batched s':>9s} "
        f"{'1-by-1 img/s':>12s} {'batched img/s':>13s} {'speedup':>7s} {'CPU speedup':>11s} {'same':>5s}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['db']:6s} {r['images_in_db']:6d} {r['distinct_sizes']:5d} {r['imsize']:6d} "
            f"{r['images_extracted']:9d} {r['one_by_one_s']:9.2f} {r['batched_s']:9.2f} "
            f"{r['one_by_one_img_s']:12.1f} {r['batched_img_s']:13.1f} {r['speedup']:7.2f} {r['speedup_cpu']:11.2f} "
            f"{str(r['same_tuples']):>5s}"
        )
    main_row = rows[-1]
    print(
        json.dumps(
            {
                "benchmark": "tuples",
                "db": main_row["db"],
                "ours_s": round(main_row["batched_s"], 3),
                "baseline_s": round(main_row["one_by_one_s"], 3),
                "speedup": round(main_row["speedup"], 2),
                "speedup_cpu": round(main_row["speedup_cpu"], 2),
                "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                "device": args.device,
                "quick": args.quick,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
