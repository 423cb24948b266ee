"""Retrieval benchmark: night→day / day→day mAP on a folder dataset, plus extraction and metric speed.

What it compares, all in one run:

1. quality of the standard test pipeline (CLAHE + multi-scale [1, 1/√2, 1/2] GeM-p) against two
   ablations (no CLAHE, single scale) and, with ``--baseline-checkpoint``, against another network;
2. descriptor extraction batched by image size (ours) against one image per forward pass (the
   standard loop), checking that both give the same descriptors -> ``speedup``;
3. the vectorised mAP against a literal per-item loop on a synthetic ROxford-sized ranking.

    python benchmarks/retrieval.py --quick
    python benchmarks/retrieval.py --checkpoint embed_best.pth --baseline-checkpoint embed_plain.pth --device cuda

The last line printed is one JSON object (``map_night_day``, ``speedup``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dsa_plugin.evaluation.descriptors import DEFAULT_SCALES, extract_descriptors
from dsa_plugin.evaluation.metrics import compute_map
from dsa_plugin.evaluation.runner import evaluate_folder

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))


def literal_map(ranks: np.ndarray, gnd: list[dict]) -> float:
    """Baseline: the per-item loop of the standard evaluation (junk shifts counted one by one)."""
    total, counted = 0.0, 0
    for i, g in enumerate(gnd):
        ok, junk = set(g["ok"].tolist()), set(g["junk"].tolist())
        if not ok:
            continue
        pos, junk_seen, found, ap = 0, 0, 0, 0.0
        for item in ranks[:, i].tolist():
            if item in junk:
                junk_seen += 1
            elif item in ok:
                r = pos - junk_seen
                ap += ((1.0 if r == 0 else found / r) + (found + 1) / (r + 1)) / 2 / len(ok)
                found += 1
            pos += 1
        total += ap
        counted += 1
    return total / counted


def synthetic_folder(root: Path, places: int = 6, per_domain: int = 8) -> Path:
    """A procedural stand-in for the AMOS folder when ../shared is absent."""
    import csv

    from PIL import Image

    rows = []
    for p in range(places):
        rng = np.random.default_rng(p)
        scene = rng.random((24, 32, 3))
        for domain in ("day", "night"):
            (root / domain).mkdir(parents=True, exist_ok=True)
            for v in range(per_domain):
                img = np.kron(scene, np.ones((8, 8, 1))) + 0.05 * rng.normal(size=(192, 256, 3))
                if domain == "night":
                    img = img * 0.3
                name = f"{domain}/p{p}_{v}.jpg"
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / name)
                rows.append({"file": name, "domain": domain, "place_id": f"p{p}", "role": "eval"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "domain", "place_id", "role"])
        w.writeheader()
        w.writerows(rows)
    return root


def network(checkpoint: str | None, device: str, seed: int):
    from dsa_plugin.evaluation.networks import build_gem_network, load_embedding_network

    if checkpoint:
        return load_embedding_network(checkpoint, device), Path(checkpoint).name
    torch.manual_seed(seed)
    return build_gem_network("gem_small").to(device).eval(), f"gem_small (random init, seed {seed})"


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="embedding checkpoint (default: gem_small with random init)")
    ap.add_argument("--baseline-checkpoint", help="a second network to compare night→day mAP with")
    ap.add_argument("--whitening", help="*_lw.pkl for --checkpoint")
    ap.add_argument(
        "--folder", default=None, help="folder with labels.csv (default: shared AMOS day/night, else synthetic)"
    )
    ap.add_argument("--role", default="eval")
    ap.add_argument("--image-size", type=int, default=None, help="longest side (default 512; --quick 160)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (median; default 3, --quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute on 2 CPU cores")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image_size = args.image_size or (160 if args.quick else 512)
    repeats = args.repeats or (1 if args.quick else 3)
    tmp = None
    if args.folder:
        folder, role = Path(args.folder), args.role
    elif (AMOS / "labels.csv").is_file():
        folder, role = AMOS, args.role
    else:
        tmp = tempfile.TemporaryDirectory()
        folder, role = synthetic_folder(Path(tmp.name)), None
    net, label = network(args.checkpoint, args.device, args.seed)
    if args.whitening:
        from dsa_plugin.evaluation.networks import attach_whitening

        attach_whitening(net, args.whitening)

    common = dict(device=args.device, image_size=image_size, role=role, batch_size=args.batch_size, progress=False)
    rows = []
    t0 = time.perf_counter()
    full = evaluate_folder(net, folder, **common)
    rows.append((label, "CLAHE + 3 scales", full))
    no_clahe = evaluate_folder(net, folder, clahe=False, **common)
    rows.append((label, "no CLAHE", no_clahe))
    single = evaluate_folder(net, folder, scales=(1.0,), **common)
    rows.append((label, "single scale", single))
    baseline = None
    if args.baseline_checkpoint:
        bnet, blabel = network(args.baseline_checkpoint, args.device, args.seed)
        baseline = evaluate_folder(bnet, folder, **common)
        rows.append((blabel, "CLAHE + 3 scales", baseline))
    quality_s = time.perf_counter() - t0

    # extraction speed: batched by size vs one image per pass, same descriptors
    from dsa_plugin.evaluation.datasets import load_folder_dataset

    files = load_folder_dataset(folder, role=role).files
    if args.quick:
        files = files[:48]
    kw = dict(image_size=image_size, scales=DEFAULT_SCALES, clahe=True, device=args.device, progress=False)
    extract_descriptors(net, files[:2], **kw)  # warm-up
    ours_s, ours = timed(lambda: extract_descriptors(net, files, batch_size=args.batch_size, **kw), repeats)
    base_s, base = timed(lambda: extract_descriptors(net, files, batch_size=1, **kw), repeats)
    max_diff = float((ours - base).abs().max())

    # metric speed on an ROxford-sized synthetic ranking (70 queries x 4993 db)
    rng = np.random.default_rng(0)
    n_db, n_q = (1000, 20) if args.quick else (4993, 70)
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_q)], axis=1)
    gnd = []
    for _ in range(n_q):
        perm = rng.permutation(n_db)
        gnd.append({"ok": perm[:50], "junk": perm[50:120]})
    vec_s, vec_map = timed(lambda: compute_map(ranks, gnd).map, max(repeats, 3))
    lit_s, lit_map = timed(lambda: literal_map(ranks, gnd), max(repeats, 3))

    print(f"Retrieval on {folder} (role={role}), image size {image_size}, device {args.device}")
    print(f"{'network':34s} {'pipeline':18s} {'night→day mAP':>13s} {'mP@1':>6s} {'mP@5':>6s} {'day→day mAP':>11s}")
    print("-" * 94)
    for name, pipe, r in rows:
        nd, dd = r["night->day"], r["day->day"]
        print(
            f"{name[:34]:34s} {pipe:18s} {100 * nd['map']:13.1f} {100 * nd['mp@1']:6.1f} {100 * nd['mp@5']:6.1f} "
            f"{100 * dd['map']:11.1f}"
        )
    print()
    print(f"{'timing (median of ' + str(repeats) + ')':40s} {'seconds':>9s}")
    print("-" * 50)
    print(f"{'extraction, batched by size (ours)':40s} {ours_s:9.2f}   {len(files)} images, batch {args.batch_size}")
    print(f"{'extraction, one image per pass':40s} {base_s:9.2f}   max |diff| {max_diff:.1e}")
    print(f"{'mAP vectorised (ours)':40s} {vec_s:9.4f}   {n_q} queries x {n_db} db")
    print(f"{'mAP literal loop':40s} {lit_s:9.4f}   |diff| {abs(vec_map - lit_map):.1e}")
    result = {
        "benchmark": "retrieval",
        "network": label,
        "map_night_day": round(full["night->day"]["map"], 4),
        "map_day_day": round(full["day->day"]["map"], 4),
        "mp1_night_day": round(full["night->day"]["mp@1"], 4),
        "map_night_day_no_clahe": round(no_clahe["night->day"]["map"], 4),
        "map_night_day_single_scale": round(single["night->day"]["map"], 4),
        "baseline_map_night_day": round(baseline["night->day"]["map"], 4) if baseline else None,
        "speedup": round(base_s / ours_s, 3),
        "ours_s": round(ours_s, 3),
        "baseline_s": round(base_s, 3),
        "descriptor_max_abs_diff": max_diff,
        "metrics_speedup": round(lit_s / vec_s, 2),
        "quality_s": round(quality_s, 2),
        "size": {
            "images": len(files),
            "image_size": image_size,
            "queries": full["night->day"]["num_queries"],
            "db": full["night->day"]["num_db"],
        },
        "device": args.device,
        "quick": args.quick,
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
