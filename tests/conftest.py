"""Shared fixtures: the real AMOS day/night photos from ../shared (skip when absent), tiny dbs, and the
pinned toolkit copies from ../shared/toolkits when CIRTORCH_SRC / HOW_SRC are unset."""

from __future__ import annotations

import atexit
import csv
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))
#: Unmodified pinned copies of cnnimageretrieval-pytorch and HOW beside the clone (read-only).
TOOLKITS = Path(os.environ.get("DSA_TOOLKITS_DIR", REPO.parent / "shared" / "toolkits"))
CIRTORCH_COPY, HOW_COPY = "cnnimageretrieval-pytorch", "how"


def _cirtorch_root() -> Path | None:
    """Root of the importable cirtorch when it is a source tree (an editable install of a clone)."""
    spec = importlib.util.find_spec("cirtorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).resolve().parent
    return root if (root / "cirtorch" / "examples" / "train.py").is_file() else None


def _private_copy(name: str) -> Path:
    """A throw-away copy of ``TOOLKITS/name``: the shared tree stays read-only (no .pyc, no patches)."""
    base = Path(tempfile.mkdtemp(prefix="dsa-toolkit-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    # Not named `cirtorch`: a clone's root must not shadow the package it holds.
    return Path(shutil.copytree(TOOLKITS / name, base / name, ignore=shutil.ignore_patterns("__pycache__", ".git")))


def _use_pinned_toolkits() -> None:
    """Without ``CIRTORCH_SRC``/``HOW_SRC`` the integration tests use the pinned copies, by themselves.

    cirtorch: an installed clone is used as is (and named in ``CIRTORCH_SRC`` for the patch
    checks); otherwise a copy goes first on ``sys.path`` and ``PYTHONPATH`` (for the subprocess
    runs). HOW: a copy becomes ``HOW_SRC`` unless ``how`` is importable. Runs at conftest import,
    before the test modules ask whether the toolkits exist.
    """
    if not os.environ.get("CIRTORCH_SRC"):
        root = _cirtorch_root()
        if root is None and (TOOLKITS / CIRTORCH_COPY / "cirtorch").is_dir():
            root = _private_copy(CIRTORCH_COPY)
            sys.path.insert(0, str(root))
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
            importlib.invalidate_caches()
        if root is not None:
            os.environ["CIRTORCH_SRC"] = str(root)
    if (
        not os.environ.get("HOW_SRC")
        and importlib.util.find_spec("how") is None
        and (TOOLKITS / HOW_COPY / "how").is_dir()
    ):
        os.environ["HOW_SRC"] = str(_private_copy(HOW_COPY))


_use_pinned_toolkits()


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
