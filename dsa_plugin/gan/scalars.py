"""Scalar logs: one JSON object per line (``log.jsonl``), mirrored to TensorBoard when installed.

A line cut by a crash is ignored when the log is read back, and a resumed run drops the lines
after its checkpoint so that every iteration appears once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dsa_plugin.core.files import atomic_write_text

log = logging.getLogger("dsa_plugin.gan")


def read_jsonl(path: "str | Path") -> list[dict[str, Any]]:
    r"""Parsed lines of a JSONL log; a torn last line (crash while writing) is skipped.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
        >>> with open(path, "w") as f:
        ...     _ = f.write('{"iteration": 10, "G": 0.5}\n{"iteration": 20, "G"')
        >>> read_jsonl(path)
        [{'iteration': 10, 'G': 0.5}]
    """
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class ScalarLog:
    def __init__(self, path: "str | Path", tensorboard_dir: "str | Path | None" = None,
                 keep_until: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until is not None:  # resuming: forget what was logged after the checkpoint
            rows = [r for r in read_jsonl(self.path) if r.get("iteration", 0) <= keep_until]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a")
        self.tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tensorboard_dir))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = row.get("iteration", 0)
            for key, value in row.items():
                if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
