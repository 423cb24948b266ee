#!/usr/bin/env python
"""CLAHE throughput and accuracy: ``dsa_plugin.transforms.clahe`` vs the reference's OpenCV pipeline.

Baseline (same run): the reference's per-image pipeline (mdir ``rgb2normspace`` / ``ChannelClahe`` /
``normspace2rgb``): ``cv2.cvtColor(RGB2LAB)`` on float32, ``(L / 100 * 255).astype(uint8)``,
``cv2.createCLAHE(1.0, (8, 8)).apply``, back with ``cv2.cvtColor(LAB2RGB)``, one image at a time.

- CPU: the batched torch path on a ``B x 3 x H x W`` CPU tensor vs that loop (target >= 0.5x
  OpenCV's throughput). Both run with ``--threads`` threads (torch intra-op and OpenCV), 1 by
  default: on a shared, oversubscribed machine multi-threaded torch ops wait for descheduled
  OpenMP threads and the comparison would measure the scheduler.
- CUDA (when available): the batched path on GPU-resident tensors vs the round trip the reference
  needs for generator outputs on the GPU: GPU -> CPU -> OpenCV per image -> GPU (target >= 10x).
- Accuracy vs the baseline: mean / 99.9th percentile / max absolute difference (in 1/255) over all
  pixels and channels, and the number of pixels whose uint8 L differs from OpenCV's.

Images: 32 real photos from ../shared/data/amos-daynight resized to 512 x 512 (procedural scenes
when the folder is absent). Timings are medians of interleaved repeats. Last line: one JSON object.

    python benchmarks/clahe.py               # 32 images of 512 px
    python benchmarks/clahe.py --quick       # 8 images (< 1 min on 2 cores)
    python benchmarks/clahe.py --device cuda --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))


def load_images(n: int, size: int) -> tuple[list[np.ndarray], str]:
    """``n`` float32 ``size x size x 3`` RGB images in [0, 1]: real photos when present, else procedural."""
    files = sorted(AMOS.glob("*/*.jpg"))
    if len(files) >= n:
        from PIL import Image

        picks = [files[i * len(files) // n] for i in range(n)]  # spread over places, day and night
        imgs = []
        for f in picks:
            with Image.open(f) as im:
                im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.float32) / np.float32(255.0))
        return imgs, f"amos-daynight photos ({AMOS})"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    imgs = []
    for _ in range(n):
        base = np.stack([np.sin(xx * rng.uniform(2, 9) + rng.uniform(0, 6)) * 0.5 + 0.5 for _ in range(3)], -1)
        base *= rng.uniform(0.1, 1.0)  # day-ish and night-ish exposure
        for _ in range(6):  # a few flat "buildings"
            x0, y0 = rng.integers(0, size, 2)
            base[y0:y0 + size // 4, x0:x0 + size // 6] = rng.uniform(0, 1, 3)
        noise = rng.normal(0, 0.02, base.shape)
        imgs.append(np.clip(base * (0.7 + 0.3 * yy[..., None]) + noise, 0, 1).astype(np.float32))
    return imgs, "procedural scenes (photos not found)"


def reference_clahe(img: np.ndarray, engine) -> np.ndarray:
    import cv2

    spc = (cv2.cvtColor(img, cv2.COLOR_RGB2LAB) + np.array([0, 128, 128], dtype=np.float32)) / np.array(
        [100.0, 255.0, 255.0], dtype=np.float32)
    spc[:, :, 0] = engine.apply((spc[:, :, 0] * 255).astype(np.uint8)).astype(np.float32) / 255.0
    back = spc * np.array([100.0, 255.0, 255.0], dtype=np.float32) - np.array([0, 128, 128], dtype=np.float32)
    return cv2.cvtColor(back, cv2.COLOR_LAB2RGB)


def reference_l_u8(img: np.ndarray) -> np.ndarray:
    import cv2

    return ((cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[:, :, 0] / np.float32(100.0)) * 255).astype(np.uint8)


def timed(fn, sync=None) -> float:
    if sync:
        sync()
    t = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - t


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="8 images, 3 repeats (< 1 min on 2 cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CPU, plus CUDA when available; cuda: require CUDA")
    p.add_argument("--images", type=int, default=None, help="batch size (32; --quick 8)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (512)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (5; --quick 3)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads for the CPU comparison (1)")
    return p


def _cpu_side(imgs, x, engine, repeats):
    """CPU timings (OpenCV per image vs ours batched), our output and the accuracy against OpenCV."""
    from dsa_plugin.transforms import clahe
    from dsa_plugin.transforms.lab import _lab_encode, _lab_table

    def baseline_cpu():
        return [reference_clahe(img, engine) for img in imgs]

    def ours_cpu():
        return clahe(x)

    # warm-up (builds the lookup tables once), then interleaved repeats
    ref = baseline_cpu()
    ours = ours_cpu()
    t_base, t_ours = [], []
    for _ in range(repeats):
        t_base.append(timed(baseline_cpu))
        t_ours.append(timed(ours_cpu))
    cpu = {"opencv_s": statistics.median(t_base), "ours_s": statistics.median(t_ours)}
    cpu["speedup"] = cpu["opencv_s"] / cpu["ours_s"]

    got = ours.permute(0, 2, 3, 1).numpy()
    diff = np.abs(got.astype(np.float64) - np.stack(ref).astype(np.float64)) * 255
    lum = _lab_encode(x, _lab_table(torch.device("cpu")))[0].numpy()
    l_mismatch = int(sum((lum[i] != reference_l_u8(img)).sum() for i, img in enumerate(imgs)))
    acc = {"mean_abs_255": float(diff.mean()), "p999_abs_255": float(np.quantile(diff, 0.999)),
           "max_abs_255": float(diff.max()), "l_uint8_mismatches": l_mismatch, "pixels": int(lum.size)}
    return cpu, ours, acc


def _gpu_side(x, ours, engine, repeats):
    """CUDA timings: the GPU->CPU->OpenCV->GPU round trip vs ours on GPU tensors."""
    from dsa_plugin.transforms import clahe

    dev = torch.device("cuda")
    xg = x.to(dev)
    sync = torch.cuda.synchronize

    def baseline_gpu():
        host = xg.permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([reference_clahe(np.ascontiguousarray(h), engine) for h in host])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(dev)

    def ours_gpu():
        return clahe(xg)

    baseline_gpu()
    outg = ours_gpu()
    g_base, g_ours = [], []
    for _ in range(repeats):
        g_base.append(timed(baseline_gpu, sync))
        g_ours.append(timed(ours_gpu, sync))
    gpu = {"roundtrip_s": statistics.median(g_base), "ours_s": statistics.median(g_ours),
           "device_name": torch.cuda.get_device_name(dev),
           "max_abs_vs_cpu_255": float((outg.cpu() - ours).abs().max()) * 255}
    gpu["speedup"] = gpu["roundtrip_s"] / gpu["ours_s"]
    return gpu


def _report(args, n, source, cpu, gpu, acc) -> None:
    px = n * args.size * args.size
    print(f"CLAHE (clip 1.0, 8x8 tiles) on {n} images of {args.size}x{args.size}, {source}")
    print(f"{'path':<44}{'time [s]':>10}{'Mpx/s':>9}{'vs baseline':>13}")
    rows = [("CPU  OpenCV per image (reference)", cpu["opencv_s"], 1.0),
            (f"CPU  dsa_plugin clahe, batched ({args.threads} thr)", cpu["ours_s"], cpu["speedup"])]
    if gpu:
        rows += [("CUDA GPU->CPU->OpenCV->GPU round trip", gpu["roundtrip_s"], 1.0),
                 ("CUDA dsa_plugin clahe on GPU tensors", gpu["ours_s"], gpu["speedup"])]
    for name, t, r in rows:
        print(f"{name:<44}{t:>10.3f}{px / t / 1e6:>9.2f}{r:>12.2f}x")
    print(f"targets: CPU >= 0.5x -> {'met' if cpu['speedup'] >= 0.5 else 'NOT met'}"
          + (f"; CUDA >= 10x -> {'met' if gpu['speedup'] >= 10 else 'NOT met'}" if gpu else "; CUDA: not available"))
    print(f"accuracy vs OpenCV: mean {acc['mean_abs_255']:.4f}/255, p99.9 {acc['p999_abs_255']:.4f}/255, "
          f"max {acc['max_abs_255']:.4f}/255; uint8 L differs on {acc['l_uint8_mismatches']} of {acc['pixels']} "
          "pixels")
    result = {"benchmark": "clahe", "speedup": round(gpu["speedup"] if gpu else cpu["speedup"], 3),
              "cpu_speedup": round(cpu["speedup"], 3), "cuda_speedup": round(gpu["speedup"], 3) if gpu else None,
              "cpu": {k: round(v, 4) for k, v in cpu.items()},
              "cuda": ({k: (round(v, 4) if isinstance(v, float) else v) for k, v in gpu.items()} if gpu else None),
              "accuracy": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in acc.items()},
              "size": {"images": n, "height": args.size, "width": args.size}, "source": source,
              "threads": args.threads, "device": "cuda" if gpu else "cpu", "quick": args.quick}
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import cv2
    except ImportError:
        print("benchmarks/clahe.py needs opencv-python-headless (pip install -e '.[test]')", file=sys.stderr)
        return 2
    n = args.images or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 5)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    imgs, source = load_images(n, args.size)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    engine = cv2.createCLAHE(clipLimit=1.0, tileGridSize=(8, 8))
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cpu, ours, acc = _cpu_side(imgs, x, engine, repeats)
    gpu = _gpu_side(x, ours, engine, repeats) if use_cuda else None
    _report(args, n, source, cpu, gpu, acc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
