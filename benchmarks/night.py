"""Benchmark: night anchors of one epoch from the night cache vs translated online; translator speed.

Reference proportions per epoch (docs/reference.md §md5-selection, §tuple-sizes): diverse-anchor mining extracts a pool
of Qp = 10000 anchors ("anc-pool-mine"), hard-negative mining re-extracts the Q = 2000 chosen
anchors ("anc-mine") and training loads those Q anchors again ("anc"); the md5 rule makes 25% of
each night. That is 3500 generator runs per epoch online. We scale Qp and Q down by --scale, keep
the 25% night share exactly, and time what the tuple loader does per night anchor use: load the
day image at --image-size, then ``NightSource.night(name, x01)`` (cache: read a PNG; online: run
the full 9-block generator, random weights).

    python benchmarks/night.py            # Qp=20, Q=4 (1/500 of the reference) at 362 px: minutes on 2 CPU cores
    python benchmarks/night.py --quick    # Qp=8, Q=4 at 128 px: a smoke check, < 1 min
    python benchmarks/night.py --device cuda   # also CUDA fp32 vs AMP images/s

The last line is one JSON object with ``speedup`` = online / cache.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))


def day_images(tmp: Path, n: int) -> tuple[list[str], str]:
    """AMOS day photos when present (real content), else procedural 512x384 JPEGs."""
    amos = sorted((AMOS / "day").glob("*.jpg")) if (AMOS / "day").is_dir() else []
    if len(amos) >= n:
        return [str(p) for p in amos], f"AMOS day photos ({AMOS})"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(max(n, 64)):
        base = rng.random((384 // 16, 512 // 16, 3))
        pix = np.kron(base, np.ones((16, 16, 1))) * 255 + rng.normal(0, 10, (384, 512, 3))
        path = tmp / "days" / f"{i:05d}_{rng.integers(1 << 30):x}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8)).save(path, quality=92)
        out.append(str(path))
    return out, "procedural 512x384 images"


def epoch_uses(paths: list[str], qp: int, q: int, seed: int = 0):
    """(pool, anchors) as (path, label) lists with exactly 25% night by the md5 rule, anchors drawn from the pool."""
    from dsa_plugin.night import image_name, is_night

    rng = random.Random(seed)
    night = [p for p in paths if is_night(image_name(p), "anc")]
    day = [p for p in paths if not is_night(image_name(p), "anc")]
    n_night = round(qp * 0.25)
    if len(night) < n_night or len(day) < qp - n_night:
        raise SystemExit(f"not enough images for a pool of {qp}: {len(night)} night-selected, {len(day)} others")
    pool_night, pool_day = rng.sample(night, n_night), rng.sample(day, qp - n_night)
    q_night = round(q * 0.25)
    anchors = rng.sample(pool_night, q_night) + rng.sample(pool_day, q - q_night)
    uses = [(p, "anc-pool-mine") for p in pool_night + pool_day]
    uses += [(p, "anc-mine") for p in anchors] + [(p, "anc") for p in anchors]
    return uses, pool_night


def prepare_epoch(uses, source, image_size: int) -> float:
    """Time the loader's work for every night anchor use: load the day image, get its night version."""
    from dsa_plugin.core.images import load_image01
    from dsa_plugin.night import image_name

    start = time.perf_counter()
    for path, label in uses:
        name = image_name(path)
        if source.is_night(name, label):
            x01 = load_image01(path, image_size).unsqueeze(0)
            y = source.night(name, x01)
            if y.device.type == "cuda":
                torch.cuda.synchronize(y.device)
    return time.perf_counter() - start


def images_per_s(translator, size: tuple[int, int], batch: int, repeats: int) -> float:
    x = torch.rand(batch, 3, *size, device=translator.device)
    translator.translate(x[:1])  # warm-up (cuDNN autotune, allocator)
    times = []
    for _ in range(repeats):
        if translator.device.type == "cuda":
            torch.cuda.synchronize(translator.device)
        t0 = time.perf_counter()
        translator.translate(x)
        if translator.device.type == "cuda":
            torch.cuda.synchronize(translator.device)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller epoch and images (< 1 min on 2 CPU cores)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--qpool", type=int, default=None, help="anchor pool Qp, a multiple of 4 (reference 10000; default 20, quick 8)"
    )
    p.add_argument("--qsize", type=int, default=None, help="anchors Q, a multiple of 4 (reference 2000; default 4)")
    p.add_argument("--image-size", type=int, default=None, help="longer image side (default 362; quick 128)")
    p.add_argument("--repeats", type=int, default=None, help="repeats of the cached epoch (median; default 5)")
    args = p.parse_args(argv)

    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.night import NightCache, NightSource, NightTranslator, build_night_cache

    qp = args.qpool or (8 if args.quick else 20)
    q = args.qsize or 4
    if qp % 4 or q % 4 or q > qp:
        raise SystemExit(f"--qpool ({qp}) and --qsize ({q}) must be multiples of 4 (exactly 25% night) with Q <= Qp")
    image_size = args.image_size or (128 if args.quick else 362)
    repeats = args.repeats or 5
    device = torch.device(args.device)
    torch.manual_seed(0)
    translator = NightTranslator(ResnetGenerator(ngf=64, n_blocks=9, norm="batch"), device=device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, origin = day_images(tmp, 4 * qp)
        uses, unique_night = epoch_uses(paths, qp, q)
        n_night_uses = len(unique_night) + 2 * (q // 4)
        print(f"# night benchmark on {device} ({torch.get_num_threads()} CPU threads), images: {origin}")
        print(
            f"# one epoch at reference proportions (Qp=10000, Q=2000) scaled to: pool Qp={qp} ('anc-pool-mine'), "
            f"mining queries Q={q} ('anc-mine'), training anchors Q={q} ('anc'); 25% night each "
            f"-> {n_night_uses} night anchor uses, {len(unique_night)} distinct night images "
            f"(reference: 3500 uses, ~2500 distinct); image size {image_size}; generator: 9 blocks, ngf 64, random "
            "weights"
        )

        t0 = time.perf_counter()
        build_night_cache(tmp / "cache", unique_night, translator, image_size=image_size, progress=False,
                          batch_size=1)
        build_s = time.perf_counter() - t0
        cache = NightCache.open(tmp / "cache", generator=translator.fingerprint, image_size=image_size)
        cached = NightSource(cache=cache)
        online = NightSource(translator)

        cache_times = [prepare_epoch(uses, cached, image_size) for _ in range(repeats)]
        online_s = prepare_epoch(uses, online, image_size)  # one epoch: each use is a full generator run
        cache_s = statistics.median(cache_times)
        assert cached.stats["cached"] == repeats * n_night_uses and online.stats["online"] == n_night_uses

        # Same tensors from both paths (8-bit PNG: <= 0.5/255).
        from dsa_plugin.core.images import load_image01
        from dsa_plugin.night import image_name

        diff = 0.0
        for path in unique_night:
            x01 = load_image01(path, image_size).unsqueeze(0)
            a = cached.night(image_name(path), x01)
            b = online.night(image_name(path), x01).to(a.device)
            diff = max(diff, (a - b).abs().max().item())

        size = (272, 362) if not args.quick else (96, 128)
        speeds = {f"{device.type}_fp32_b1": images_per_s(translator, size, 1, 1 if args.quick else 3)}
        if device.type == "cuda":
            speeds["cuda_fp32_b8"] = images_per_s(translator, size, 8, 5)
            amp = NightTranslator(translator.generator, device=device, amp=True)
            speeds["cuda_amp_b1"] = images_per_s(amp, size, 1, 5)
            speeds["cuda_amp_b8"] = images_per_s(amp, size, 8, 5)

    speedup = online_s / cache_s
    rows = [
        ("night anchors of one epoch, from the cache (median of %d)" % repeats, f"{cache_s:.3f} s"),
        ("night anchors of one epoch, translated online", f"{online_s:.2f} s"),
        ("speedup cache vs online", f"{speedup:.1f}x"),
        ("one-time cache build (%d images)" % len(unique_night), f"{build_s:.2f} s"),
        ("max |cache - online| (8-bit PNG)", f"{diff * 255:.2f}/255"),
    ] + [(f"translator images/s at {size[0]}x{size[1]}, {k}", f"{v:.3f}") for k, v in speeds.items()]
    width = max(len(r[0]) for r in rows)
    print("-" * (width + 16))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>12}")
    print("-" * (width + 16))
    print(json.dumps({
        "benchmark": "night", "cache_s": round(cache_s, 4), "online_s": round(online_s, 3),
        "speedup": round(speedup, 1), "build_s": round(build_s, 2), "max_abs_diff_255": round(diff * 255, 3),
        "translator_images_per_s": {k: round(v, 3) for k, v in speeds.items()},
        "size": {"qpool": qp, "qsize": q, "night_uses": n_night_uses,
                 "distinct_night": len(unique_night), "image_size": image_size, "translator_input": list(size)},
        "device": str(device), "quick": args.quick,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
