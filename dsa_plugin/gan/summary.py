"""What a GAN training run produced: :class:`TrainResult`, ``summary.json`` and the printed summary.

Example:
    >>> from pathlib import Path
    >>> result = TrainResult(Path("runs/x"), Path("runs/x/checkpoints/generator_X_last.pth"), Path("runs/x/log.jsonl"),
    ...                      [], [], Path("runs/x/checkpoints/state_last.pth"), 10, 1, None,
    ...                      {"variant": "hedngan", "iterations": 10, "epochs_completed": 1, "iterations_this_run": 10,
    ...                       "wall_s": 2.0, "its_per_s": 5.0, "device": "cpu", "processes": 1, "resumed_from": None})
    >>> print(format_summary(result))
    GAN training finished: hedngan, iteration 10 (epochs completed 1), 10 iterations in 2.0 s (5.00 it/s) on cpu x1
      generator: runs/x/checkpoints/generator_X_last.pth
      log: runs/x/log.jsonl
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa_plugin.core.files import write_json

__all__ = ["RunSummary", "TrainResult", "format_summary"]

log = logging.getLogger("dsa_plugin.gan")


@dataclass
class TrainResult:
    """What a run produced (paths are on the main process's file system)."""

    out_dir: Path
    generator_path: Path
    log_path: Path
    sample_paths: list[Path]
    checkpoint_paths: list[Path]
    state_path: Path
    iterations: int
    epochs_completed: int
    resumed_from: int | None
    summary: dict[str, Any] = field(default_factory=dict)


class RunSummary:
    """The end of a run for :class:`~dsa_plugin.gan.trainer.Trainer`: its result and ``summary.json``."""

    def _result(self, sample_paths, it_start, t_start, last_row) -> TrainResult:
        """The run's :class:`TrainResult`; writes ``summary.json`` unless a rerun did nothing."""
        wall = time.perf_counter() - t_start
        done = self.iteration - it_start
        gen = self.ckpt_dir / "generator_X_last.pth"
        if not sample_paths and (self.sample_dir / "final.png").is_file():
            sample_paths = [self.sample_dir / "final.png"]
        summary = {
            "variant": self.cfg.variant, "device": str(self.device), "processes": self.ctx.world_size,
            "iterations": self.iteration, "iterations_this_run": done, "epochs_completed": self.epoch,
            "resumed_from": self.resumed_from, "wall_s": round(wall, 3),
            "its_per_s": round(done / wall, 4) if wall > 0 and done else None,
            "final": last_row, "generator": str(gen), "log": str(self.log_path),
            "samples": [str(p) for p in sample_paths],
            **({"identity_warmup": self.warmup} if self.warmup else {}),
        }
        previous = self._previous_summary() if done == 0 and self.resumed_from is not None else None
        if previous is not None:
            # a rerun of a finished run did nothing: keep the summary.json of the run that did the work
            # (the returned summary still says what this run did: nothing)
            if self.ctx.is_main:
                log.info("nothing left to do (iteration %d of %d); kept %s", self.iteration, self.total,
                         self.out / "summary.json")
        elif self.ctx.is_main:
            write_json(self.out / "summary.json", summary)
        checkpoints = sorted(self.ckpt_dir.glob("generator_*.pth"))
        return TrainResult(self.out, gen, self.log_path, list(sample_paths), checkpoints, self.state_path,
                           self.iteration, self.epoch, self.resumed_from, summary)

    def _previous_summary(self) -> dict[str, Any] | None:
        """summary.json of an earlier run that reached this iteration, or ``None``."""
        path = self.out / "summary.json"
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        need = ("variant", "iterations", "iterations_this_run", "epochs_completed", "wall_s", "device", "processes",
                "resumed_from")
        if not isinstance(old, dict) or any(k not in old for k in need) or old.get("iterations") != self.iteration:
            return None
        return old


def format_summary(result: TrainResult) -> str:
    s = result.summary
    speed = f"{s['its_per_s']:.2f} it/s" if s.get("its_per_s") else "nothing left to do"
    lines = [f"GAN training finished: {s['variant']}, iteration {s['iterations']} (epochs completed "
             f"{s['epochs_completed']}), {s['iterations_this_run']} iterations in {s['wall_s']:.1f} s "
             f"({speed}) on {s['device']} x{s['processes']}"
             + (f", resumed from iteration {s['resumed_from']}" if s["resumed_from"] is not None else "")]
    if s.get("final"):
        skip = ("iteration", "epoch", "its_per_s")
        lines.append("  last losses: " + "  ".join(f"{k} {v:.4g}" for k, v in s["final"].items()
                                                   if k not in skip and isinstance(v, (int, float))))
    lines.append(f"  generator: {result.generator_path}")
    lines.append(f"  log: {result.log_path}")
    if result.sample_paths:
        lines.append(f"  samples: {len(result.sample_paths)} grid(s), last {result.sample_paths[-1]}")
    return "\n".join(lines)
