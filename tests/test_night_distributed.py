"""Sharded `dsa translate` under torchrun (2 processes, gloo): one manifest, same cache as 1 process."""

import json
import subprocess
import sys

import pytest
import torch

from dsa_plugin.data import make_tiny_sfm_db
from dsa_plugin.models import ResnetGenerator
from dsa_plugin.models.checkpoints import save_network
from dsa_plugin.night import NightCache


@pytest.mark.slow
def test_two_process_build_equals_one_process(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    make_tiny_sfm_db(tmp_path, clusters=4, images_per_cluster=4, size=(24, 32))
    torch.manual_seed(0)
    ckpt = tmp_path / "g.pth"
    save_network(ckpt, ResnetGenerator(ngf=4, n_blocks=1))
    common = ["translate", "--generator", str(ckpt), "--data-root", str(tmp_path), "--ratio", "1.0",
              "--image-size", "32", "--batch-size", "1", "--no-progress"]

    from dsa_plugin.cli import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "dsa_plugin", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr

    a, b = NightCache.open(tmp_path / "one"), NightCache.open(tmp_path / "two")
    assert len(a) == 12  # every query image (3 pairs x 4 clusters) at ratio 1
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert ma == mb  # one manifest, same content, written once by rank 0
    for name in a.names:
        assert (a.load(name) - b.load(name)).abs().max() <= 1 / 255
    leftovers = [p for p in (tmp_path / "two").rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers
