"""Run-once stages: each finished stage leaves ``<out>/stages/<name>.json`` (its result and a
fingerprint of the settings it ran with); a rerun with the same settings reuses it, so an
interrupted demo continues where it stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from dsa_plugin.core.files import write_json
from dsa_plugin.demo.settings import stage_fingerprint


class Stages:
    """Run-once stages keyed by name; results are JSON files under ``<out>/stages``.

    ``extra`` settings (e.g. ``{"gan_seed": 1}``) join the fingerprint of one call only.
    """

    def __init__(self, root: Path, settings: dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.dir = root / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.timings: dict[str, float] = {}
        self.reused: set[str] = set()
        self.log = log

    def fingerprint(self, groups: tuple[str, ...], extra: dict[str, Any] | None = None) -> str:
        return stage_fingerprint({**self.settings, **(extra or {})}, *groups)

    def cached(self, name: str, groups: tuple[str, ...] = (),
               extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The saved result of stage ``name`` if it was made with the same ``groups`` settings."""
        marker = self.dir / f"{name}.json"
        if marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("fingerprint") == self.fingerprint(groups, extra):
                self.timings[name] = saved["seconds"]
                self.reused.add(name)
                self.log(f"[demo] {name}: reused ({marker})")
                return saved["result"]
        return None

    def record(self, name: str, groups: tuple[str, ...], result: dict[str, Any], seconds: float,
               extra: dict[str, Any] | None = None) -> None:
        """Save a finished stage (atomically: a killed run never leaves half a marker)."""
        self.timings[name] = seconds
        write_json(self.dir / f"{name}.json",
                   {"fingerprint": self.fingerprint(groups, extra), "seconds": seconds, "result": result},
                   indent=None, newline=False)
        self.log(f"[demo] {name}: done in {seconds:.1f}s")

    def run(self, name: str, fn: Callable[[], dict[str, Any]], groups: tuple[str, ...] = (),
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run ``fn`` unless ``<name>.json`` holds a result made with the same ``groups`` settings."""
        saved = self.cached(name, groups, extra)
        if saved is not None:
            return saved
        self.log(f"[demo] {name} ...")
        t0 = time.perf_counter()
        result = fn()
        self.record(name, groups, result, time.perf_counter() - t0, extra)
        return result
