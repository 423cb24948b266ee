#!/usr/bin/env python
"""HEDN GAN iteration speed: dsa_plugin's step vs a literal re-implementation of the reference.

The baseline is ``reference_hedngan_iteration`` from tests/test_gan_step.py: the reference's order
with the teacher recomputed under autograd (and back-propagated into), the logging-only student
pass, and parameter gradients of D and the student in the G step. Ours computes the teacher once
without autograd, skips the logging pass and freezes D / the student in the G step. Both start
from identical weights and see the same batches; iterations are timed alternately (medians).
On CPU the speed-up uses the process's CPU time with one torch thread by default (exactly the
work done, whatever else runs on the machine) and OpenMP's passive waiting (set before torch
loads, so that with ``--threads N`` waiting threads do not bill spinning as CPU time); wall time
is printed too. On CUDA: wall time.
Peak memory is measured in a fresh process per implementation (growth of the resident-set
high-water mark over the steps, beyond the memory held after setup, on CPU;
``torch.cuda.max_memory_allocated`` on CUDA).

    python benchmarks/gan_step.py                # 256x256, batch 1, full-size networks
    python benchmarks/gan_step.py --quick        # 96x96 (about 1.5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

# CPU time is the measure on CPU; with OpenMP's default (active) waiting, a thread that waits at a
# barrier for a descheduled sibling spins and bills CPU time, so on a loaded machine the figure
# measured the neighbours (0.87x at the default 2 threads). Passive waiting makes CPU time the work
# done at any thread count. It must be set before torch loads OpenMP: re-execute once if unset.
if __name__ == "__main__" and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _setup(size: int, batch: int, device: str, impl: str | None = None):
    from test_gan_step import ref_adam, ref_hed_optimizer  # noqa: I001 (tests/ helper first, as imported)

    from dsa_plugin.gan.config import load_config
    from dsa_plugin.gan.networks import build_networks, build_optimizers
    from dsa_plugin.gan.variant_steps import make_step

    warnings.filterwarnings("ignore")
    cfg = load_config("hedngan", {"data.crop_size": size, "train.batch_size": batch, "device": device})
    nets = build_networks(cfg)
    for net in nets.values():
        net.to(device)
    out = {}
    if impl in (None, "ours"):
        ours_nets = {k: copy.deepcopy(v) for k, v in nets.items()} if impl is None else nets
        out["ours"] = make_step(cfg, ours_nets, build_optimizers(cfg, ours_nets))
    if impl in (None, "baseline"):
        ref = {k: copy.deepcopy(v) for k, v in nets.items()} if impl is None else nets
        ref["detector_frozen"].requires_grad_(True)
        opts = (ref_adam(ref["generator_X"]), ref_adam(ref["discriminator_Y"]), ref_hed_optimizer(ref["detector"]))
        out["baseline"] = _baseline(ref, opts)
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(batch, 3, size, size, generator=g).mul(2).sub(1).to(device),
             torch.rand(batch, 3, size, size, generator=g).mul(2).sub(1).to(device)) for _ in range(2)]
    return out, data


def _baseline(ref, opts):
    from test_gan_step import reference_hedngan_iteration

    def step(day, night):
        return reference_hedngan_iteration(ref["generator_X"], ref["discriminator_Y"], ref["detector"],
                                           ref["detector_frozen"], *opts, day, night)
    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _proc_status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (VmHWM is per address space, so a spawned child starts
    fresh, unlike ru_maxrss which Linux carries over from the parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(impl: str, size: int, batch: int, device: str, iters: int, queue, threads: int) -> None:
    torch.set_num_threads(threads)
    steps, data = _setup(size, batch, device, impl)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:  # reset VmHWM so that setup's transient peak does not count (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        base = _proc_status_mb("VmRSS")
    for i in range(iters):
        steps[impl](*data[i % len(data)])
    _sync(device)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _proc_status_mb("VmHWM") - base
    queue.put(peak)


def peak_memory(impl: str, size: int, batch: int, device: str, iters: int = 2) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(impl, size, batch, device, iters, queue, torch.get_num_threads()))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="96 px, 5 timed iterations each")
    p.add_argument("--size", type=int, default=None, help="crop side (default 256, quick 96)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per implementation (default 5)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default on CPU: 1, the repeatable comparison on a shared machine)")
    args = p.parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    size = args.size or (96 if args.quick else 256)
    repeats = args.repeats or 5

    steps, data = _setup(size, args.batch, args.device)
    times = {"ours": [], "baseline": []}
    cpu_times = {"ours": [], "baseline": []}
    for name in ("ours", "baseline"):  # warm-up
        steps[name](*data[0])
    for r in range(repeats):
        for name in (("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")):
            day, night = data[r % len(data)]
            _sync(args.device)
            t, c = time.perf_counter(), time.process_time()
            steps[name](day, night)
            _sync(args.device)
            times[name].append(time.perf_counter() - t)
            cpu_times[name].append(time.process_time() - c)
    wall = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    # On a CPU shared with other jobs, wall time mostly measures the neighbours; the process's CPU
    # time does not (with one thread it is exactly the work done). GPUs: wall time.
    use_cpu_time = args.device == "cpu"
    med = cpu if use_cpu_time else wall
    mem = {"ours": None, "baseline": None}
    if not args.no_memory:
        mem = {k: round(peak_memory(k, size, args.batch, args.device), 1) for k in mem}

    speedup = med["baseline"] / med["ours"]
    print(f"HEDN GAN iteration, {size}x{size}, batch {args.batch}, full-size networks, device {args.device}, "
          f"{repeats} timed iterations each (median), torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"{'implementation':<30}{'cpu s/it':>10}{'wall s/it':>11}{'it/s':>8}{'peak MB':>10}")
    for name, label in (("baseline", "literal reference order"), ("ours", "dsa_plugin HedNGanStep")):
        m = f"{mem[name]:.0f}" if mem[name] is not None else "-"
        print(f"{label:<30}{cpu[name]:>10.3f}{wall[name]:>11.3f}{1 / med[name]:>8.3f}{m:>10}")
    print(f"speedup ({'process CPU time' if use_cpu_time else 'wall time'}): {speedup:.2f}x   "
          f"(wall-time ratio {wall['baseline'] / wall['ours']:.2f}x)")
    print(json.dumps({"benchmark": "gan_step", "variant": "hedngan", "timing": "cpu" if use_cpu_time else "wall",
                      "ours_s_per_it": round(med["ours"], 4), "baseline_s_per_it": round(med["baseline"], 4),
                      "ours_its": round(1 / med["ours"], 4), "baseline_its": round(1 / med["baseline"], 4),
                      "ours_wall_s": round(wall["ours"], 4), "baseline_wall_s": round(wall["baseline"], 4),
                      "speedup": round(speedup, 3), "speedup_wall": round(wall["baseline"] / wall["ours"], 3),
                      "peak_mem_mb": mem, "size": size, "batch": args.batch, "repeats": repeats,
                      "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "device": args.device, "quick": args.quick}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
