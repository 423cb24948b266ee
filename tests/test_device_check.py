"""benchmarks/device_check.py keeps working on machines without a GPU (CI): one line, exit 0."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs the whole GPU check")
# its preflight runs `dsa cirtorch-train --help`, which needs cirtorch (tests/conftest.py finds the
# pinned copy beside the clone; without it this test skips like the other cirtorch tests)
@pytest.mark.skipif(importlib.util.find_spec("cirtorch") is None, reason="cirtorch not installed nor beside the clone")
def test_device_check_without_cuda_says_so_in_one_line_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--out", str(tmp_path / "s.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("device_check: no CUDA device on this machine, nothing run")
    assert "8 benchmark scripts" in lines[0]
    assert not (tmp_path / "s.json").exists()  # nothing ran, so no summary
