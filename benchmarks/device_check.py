#!/usr/bin/env python
"""GPU acceptance run: every CUDA path of the plugin in one command, one JSON summary.

On a CUDA machine (in about 8 minutes; each step gets what is left of ``--budget``):

1. the CUDA tests (``pytest -k cuda``: the tests that need a GPU skip themselves elsewhere);
2. every benchmark in benchmarks/ with ``--device cuda`` (sizes chosen to fit the budget): CLAHE
   vs the OpenCV round trip with the transfer included, the GAN step (AMP / channels_last as
   configured) vs the literal reference step, the night cache vs online translation, diverse
   anchor mining, tuple extraction, retrieval, the GAN quality check and one training epoch;
3. a short ``dsa cirtorch-train`` (squeezenet, tiny generated db, every DSA flag) and a short
   ``dsa gan-train`` (tiny preset) on cuda;
4. with 2 or more GPUs, a 2-process ``torchrun`` (NCCL) GAN training.

It writes ``--out`` (default ``device_check.json``): per step the command, exit status, seconds,
the benchmark's last JSON line, and the tail of its output on failure. Exit status 0 when every
step passed.

Without CUDA it prints one line saying so and exits 0, after checking that it would run: every
script and command it calls exists and parses ``--help`` (exit 1 if one does not; CI runs this).

    python benchmarks/device_check.py                   # on the GPU machine
    python benchmarks/device_check.py --out /tmp/gpu.json --budget 480
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))
PY = sys.executable

#: (script, extra arguments on CUDA, seconds it may take at most). Sizes fit an 8-minute run on one GPU.
BENCHMARKS: list[tuple[str, list[str], int]] = [
    ("clahe.py", [], 60),
    ("gan_step.py", ["--repeats", "5"], 120),
    ("night.py", [], 90),
    ("mining.py", ["--no-scale"], 90),
    ("tuples.py", ["--quick"], 60),
    ("retrieval.py", ["--quick"], 90),
    ("gan_quality.py", ["--quick"], 90),
    ("epoch.py", [], 150),
]
#: Commands whose ``--help`` must work for the run to be possible.
COMMANDS: list[list[str]] = [
    [PY, "-m", "dsa_plugin", "gan-train", "--help"],
    [PY, "-m", "dsa_plugin", "cirtorch-train", "--help"],
    [PY, "-m", "pytest", "--version"],
]


def run(cmd: list[str], timeout: float, cwd: Path = REPO, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; exit status, seconds, last JSON line of stdout (if any), output tail on failure."""
    t0 = time.perf_counter()
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=max(1.0, timeout))
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    result: dict = {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                result["json"] = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    if rc != 0:
        result["tail"] = out[-3000:]
    return result


def preflight() -> list[str]:
    """Problems that would stop the GPU run: missing scripts, scripts or commands whose --help fails."""
    problems = []
    for script, _, _ in BENCHMARKS:
        path = BENCH / script
        if not path.is_file():
            problems.append(f"missing {path}")
            continue
        r = run([PY, str(path), "--help"], 120)
        if r["rc"] != 0:
            problems.append(f"{script} --help exited {r['rc']}")
    for cmd in COMMANDS:
        r = run(cmd, 120)
        if r["rc"] != 0:
            problems.append(f"{' '.join(cmd[2:])} exited {r['rc']}: {r.get('tail', '')[-200:]}")
    return problems


def gan_data(tmp: Path) -> tuple[str, str]:
    """Day and night folders for a short GAN run: the AMOS photos, else procedural images."""
    if (AMOS / "day").is_dir() and (AMOS / "night").is_dir():
        return str(AMOS / "day"), str(AMOS / "night")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for domain, level in (("day", 200), ("night", 40)):
        (tmp / domain).mkdir(parents=True, exist_ok=True)
        for i in range(16):
            pix = np.clip(rng.normal(level, 30, (96, 128, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pix).save(tmp / domain / f"{i}.jpg")
    return str(tmp / "day"), str(tmp / "night")


def cirtorch_world(tmp: Path) -> Path:
    from dsa_plugin.data import make_tiny_sfm_db

    root = tmp / "cirtorch-data"
    make_tiny_sfm_db(root, clusters=12, images_per_cluster=4)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/device_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="device_check.json", help="JSON summary (default device_check.json)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole run (default 480)")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        problems = preflight()
        if problems:
            print(f"device_check: no CUDA device here; the GPU run would FAIL: {'; '.join(problems)}")
            return 1
        print(f"device_check: no CUDA device on this machine, nothing run; checked that the GPU run would start "
              f"({len(BENCHMARKS)} benchmark scripts and {len(COMMANDS)} commands parse --help)")
        return 0

    deadline = time.perf_counter() + args.budget
    steps: dict[str, dict] = {}

    def step(name: str, cmd: list[str], limit: float, env: dict[str, str] | None = None) -> None:
        left = deadline - time.perf_counter()
        if left < 10:
            steps[name] = {"cmd": " ".join(cmd), "rc": None, "skipped": "time budget spent"}
        else:
            steps[name] = run(cmd, min(limit, left), env=env)
        r = steps[name]
        print(f"{name:28s} rc={r['rc']} {r.get('seconds', '-')} s"
              + (f"  speedup {r['json'].get('speedup')}" if "json" in r else ""), flush=True)

    gpus = torch.cuda.device_count()
    print(
        f"device_check on {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, budget "
        f"{args.budget:.0f} s"
    )
    step("tests (-k cuda)", [PY, "-m", "pytest", "-q", "-x", "-k", "cuda", "tests"], 90)
    for script, extra, limit in BENCHMARKS:
        step(script, [PY, str(BENCH / script), "--device", "cuda", *extra], limit)
    with tempfile.TemporaryDirectory(prefix="dsa-device-check-") as tmp_name:
        tmp = Path(tmp_name)
        day, night = gan_data(tmp)
        gan = [PY, "-m", "dsa_plugin", "gan-train", "--config", "tiny", "--device", "cuda", "--no-progress",
               f"data.day={day}", f"data.night={night}", "train.max_iterations=20"]
        step("dsa gan-train", [*gan, "--out", str(tmp / "gan")], 90)
        try:
            import cirtorch  # noqa: F401

            root = cirtorch_world(tmp)
            step("dsa cirtorch-train", [
                PY, "-m", "dsa_plugin", "cirtorch-train", str(tmp / "export"), "--arch", "squeezenet1_1",
                "--not-pretrained", "--epochs", "1", "--neg-num", "3", "--query-size", "6", "--pool-size", "20",
                "--image-size", "64", "--workers", "0", "--batch-size", "2", "--no-val", "--gpu-id", "0",
                "--dsa-data-root", str(root), "--dsa-no-download", "--dsa-skip-test", "--dsa-diverse-anchors",
                "--dsa-qpool-size", "12", "--dsa-clahe", "--dsa-device", "cuda"], 90)
        except ImportError:
            steps["dsa cirtorch-train"] = {"rc": None, "skipped": "cirtorch not importable (put a clone on PYTHONPATH)"}
        if gpus >= 2:
            step("torchrun 2 x NCCL gan-train", [
                PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dsa_plugin.gan.cli",
                "--config", "tiny", "--device", "cuda", "--no-progress", "--out", str(tmp / "gan-ddp"),
                f"data.day={day}", f"data.night={night}", "train.max_iterations=10"], 90)
        else:
            steps["torchrun 2 x NCCL gan-train"] = {"rc": None, "skipped": f"{gpus} GPU(s): needs 2"}

    failed = [k for k, v in steps.items() if v.get("rc") not in (0, None)]
    figures = {k: v["json"].get("speedup") for k, v in steps.items() if "json" in v}
    summary = {"benchmark": "device_check", "device": torch.cuda.get_device_name(0), "gpus": gpus,
               "torch": torch.__version__, "passed": not failed, "failed": failed, "speedups": figures, "steps": steps}
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"summary written to {args.out}; failed: {failed or 'none'}")
    print(json.dumps({k: summary[k] for k in ("benchmark", "device", "gpus", "passed", "failed", "speedups")}))
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
