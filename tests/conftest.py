"""Shared fixtures: the real AMOS day/night photos from ../shared (skip when absent) and tiny dbs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))


@pytest.fixture(scope="session")
def amos_dir() -> Path:
    """Folder of the 399 AMOS day/night photos with labels.csv; skips the test when absent."""
    if not (AMOS / "labels.csv").is_file():
        pytest.skip(f"AMOS day/night photos not found at {AMOS} (set DSA_AMOS_DIR)")
    return AMOS


@pytest.fixture(scope="session")
def amos_labels(amos_dir: Path) -> list[dict[str, str]]:
    with open(amos_dir / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def tiny_db(tmp_path: Path) -> Path:
    """Data root holding a tiny retrieval-SfM db (8 clusters x 4 images, 48x64 px)."""
    from dsa_plugin.data import make_tiny_sfm_db

    make_tiny_sfm_db(tmp_path)
    return tmp_path


@pytest.fixture()
def one_thread():
    """Run a test with one torch thread: tiny tensors gain nothing from intra-op threads, and on a
    busy 2-core machine the thread hand-offs stall badly. Use via ``pytest.mark.usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
