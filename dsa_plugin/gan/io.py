"""Atomic file writes for the trainer's outputs: a crash or ``kill -9`` never leaves a truncated file.

Everything is written to a temporary file in the same folder, flushed to disk, then renamed over the
target with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: "str | Path", data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: "str | Path", text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: "str | Path") -> Path:
    """``torch.save`` through a temp file + rename (uses dsa_plugin.checkpoints.atomic_save when present)."""
    try:
        from dsa_plugin.checkpoints import atomic_save
    except ImportError:  # checkpoints module not available: same semantics locally
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return atomic_write_bytes(path, buffer.getvalue())
    atomic_save(obj, path)
    return Path(path)
