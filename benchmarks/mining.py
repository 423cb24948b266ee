"""Diverse anchor mining: ours (running max + selection) vs the literal reference algorithm.

Both run on the same random L2-normalised descriptors (D x Qp, cirtorch's layout) with the same
random stream (global RNG seeded for the reference, a torch.Generator with the same seed for
ours), so their picks must be identical; the benchmark checks that too.

Every measurement runs in a fresh subprocess, so that one algorithm's memory cannot hide or
inflate the other's. Peak extra memory is measured explicitly as:
- CPU: the process's peak resident set size (``VmHWM`` in /proc/self/status) during the call,
  after resetting it by writing ``5`` to /proc/self/clear_refs, minus the resident size
  (``VmRSS``) right before the call. The descriptors and a warm-up run (thread pools, kernels)
  exist before the baseline is taken, so only memory the algorithm itself allocates counts.
  (tracemalloc cannot see torch's allocator, hence RSS.) Where clear_refs is not writable, the
  growth of ``ru_maxrss`` is used instead and the table says so.
- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the
  allocated memory before the call.

Run: ``python benchmarks/mining.py [--quick] [--device cpu|cuda] [--no-scale]``. The last line is
one JSON object with ``speedup`` (reference time / our time: process CPU time on CPU, where both
run single-threaded by default and wall time on a shared machine mostly measures the other
tenants; wall time on CUDA; both ratios are printed) and ``memory_ratio`` (our peak extra memory /
the reference's).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from oracles import reference_diverse_anchors  # noqa: E402  (gandtr's loop, MIT licence: see tests/oracles.py)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(algo: str, qp: int, q: int, d: int, seed: int, device: str, stable: bool = True) -> dict:
    from dsa_plugin.mining import diverse_anchors

    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    qvecs = torch.empty(d, qp, device=dev)
    qvecs.normal_(generator=gen)
    qvecs.div_(qvecs.norm(dim=0, keepdim=True))  # D x Qp, unit columns, no big temporaries

    def run(vecs, num, rng_seed):
        if algo == "reference":
            torch.manual_seed(rng_seed)
            return reference_diverse_anchors(vecs, num, stable=stable)
        return diverse_anchors(vecs.t(), num, generator=torch.Generator().manual_seed(rng_seed)).tolist()

    run(qvecs[:, :500].contiguous(), 50, 0)  # warm-up: thread pools, kernels, lazy imports
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        method = "cuda max_memory_allocated"
    else:
        base_kb = _status_kb("VmRSS")
        if _reset_peak() and base_kb is not None:
            method = "VmHWM after clear_refs - VmRSS before"
        else:
            base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = "ru_maxrss growth (clear_refs unavailable)"
    t0, c0 = time.perf_counter(), time.process_time()
    picks = run(qvecs, q, seed + 1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if dev.type == "cuda":
        extra = torch.cuda.max_memory_allocated() - base
    elif method.startswith("VmHWM"):
        extra = (_status_kb("VmHWM") - base_kb) * 1024
    else:
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb) * 1024
    digest = hashlib.sha1(json.dumps(picks).encode()).hexdigest()[:12]
    return {
        "algo": algo,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_extra_bytes": max(0, extra),
        "picks_sha1": digest,
        "unique": len(set(picks)) == len(picks),
        "memory_method": method,
    }


def measure(algo: str, qp: int, q: int, d: int, seed: int, device: str, repeats: int, threads: int,
            stable: bool = True) -> dict:
    runs = []
    for _ in range(repeats):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", algo, "--qp", str(qp), "--q", str(q),
               "--d", str(d), "--seed", str(seed), "--device", device, "--threads", str(threads)]
        if not stable:
            cmd.append("--unstable-reference")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "peak_extra_mb": statistics.median(r["peak_extra_bytes"] for r in runs) / 2**20,
        "picks_sha1": runs[0]["picks_sha1"],
        "unique": all(r["unique"] for r in runs),
        "memory_method": runs[0]["memory_method"],
        "repeats": repeats,
        "all_seconds": [round(r["seconds"], 3) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/mining.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Qp=2000, Q=300, no scale run (< 1 min)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--qp", type=int, default=None, help="pool size Qp (10000)")
    parser.add_argument("--q", type=int, default=None, help="anchors Q (2000)")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (median)")
    parser.add_argument(
        "--reference-repeats", type=int, default=None, help="runs of the reference (default 1: it is the slow one)"
    )
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both algorithms (1: on a shared 2-core machine more threads "
                             "oversubscribe and slow the reference down by up to 4x, which would flatter us)")
    parser.add_argument("--unstable-reference", action="store_true",
                        help="the reference's unstable argsort as written (picks may then differ on exact ties)")
    parser.add_argument("--no-scale", action="store_true", help="skip the Qp=100000, Q=20000 run")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        torch.set_num_threads(args.threads)
        print(
            json.dumps(
                worker(args.worker, args.qp, args.q, args.d, args.seed, args.device, not args.unstable_reference)
            )
        )
        return 0

    qp = args.qp or (2000 if args.quick else 10000)
    q = args.q or (300 if args.quick else 2000)
    ref_repeats = args.reference_repeats or 1
    print(f"diverse anchor mining, Qp={qp}, Q={q}, D={args.d}, device={args.device}, torch threads={args.threads}")
    ref = measure("reference", qp, q, args.d, args.seed, args.device, ref_repeats, args.threads,
                  not args.unstable_reference)
    ours = measure("ours", qp, q, args.d, args.seed, args.device, args.repeats, args.threads)
    speedup_wall = ref["seconds"] / ours["seconds"]
    speedup_cpu = ref["cpu_seconds"] / ours["cpu_seconds"] if ours["cpu_seconds"] > 0 else float("nan")
    # On a shared CPU, wall time mostly measures the other tenants; single-threaded process CPU
    # time is what each algorithm costs. On CUDA the wall time is the measure.
    speedup = speedup_wall if args.device.startswith("cuda") else speedup_cpu
    ratio = ours["peak_extra_mb"] / ref["peak_extra_mb"] if ref["peak_extra_mb"] > 0 else float("nan")
    same = ref["picks_sha1"] == ours["picks_sha1"]
    rows = [("literal reference", ref), ("ours (running max)", ours)]
    scale = None
    if not args.quick and not args.no_scale:
        big = measure("ours", 100000, 20000, args.d, args.seed, args.device, 1, args.threads)
        rows.append(("ours, scale Qp=100000 Q=20000", big))
        scale = {"qp": 100000, "q": 20000, "d": args.d, "seconds": round(big["seconds"], 2),
                 "cpu_seconds": round(big["cpu_seconds"], 2), "peak_extra_mb": round(big["peak_extra_mb"], 2),
                 "unique": big["unique"]}

    print(f"{'algorithm':32s} {'wall s':>9s} {'CPU s':>9s} {'peak extra MB':>14s} {'runs':>5s}")
    for name, r in rows:
        print(f"{name:32s} {r['seconds']:9.3f} {r['cpu_seconds']:9.3f} {r['peak_extra_mb']:14.3f} {r['repeats']:5d}")
    print(
        f"speedup {speedup_cpu:.1f}x CPU time, {speedup_wall:.1f}x wall time; memory ratio {ratio:.5f} (ours / "
        "reference); "
        f"identical picks: {same}"
    )
    print(f"times: medians over runs, each in a fresh process; memory: {ours['memory_method']}")
    print(
        json.dumps(
            {
                "benchmark": "mining",
                "ours_s": round(ours["seconds"], 4),
                "baseline_s": round(ref["seconds"], 4),
                "ours_cpu_s": round(ours["cpu_seconds"], 4),
                "baseline_cpu_s": round(ref["cpu_seconds"], 4),
                "speedup": round(speedup, 2),
                "speedup_wall": round(speedup_wall, 2),
                "speedup_cpu": round(speedup_cpu, 2),
                "ours_peak_extra_mb": round(ours["peak_extra_mb"], 3),
                "baseline_peak_extra_mb": round(ref["peak_extra_mb"], 3),
                "memory_ratio": round(ratio, 5),
                "same_picks": same,
                "size": {"qp": qp, "q": q, "d": args.d},
                "scale": scale,
                "memory_method": ours["memory_method"],
                "reference_argsort": "unstable" if args.unstable_reference else "stable",
                "threads": args.threads,
                "device": args.device,
                "quick": args.quick,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
