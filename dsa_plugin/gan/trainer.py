"""The GAN training loop: data, steps, checkpoints/resume, sample grids, scalar logs, DDP.

Why one module of ~430 lines: the loop, its resumable state (save / load) and the run summary
share every attribute of one ``Trainer``; split, a resume would read what another file writes.

Output directory::

    config.yaml                          the resolved config of the run
    log.jsonl                            scalars every train.log_every iterations (+ tensorboard/)
    samples/iter_XXXXXX.png, final.png   sample grids
    checkpoints/generator_X_last.pth     the generator in the reference 4-key layout (+ _epoch_XX)
    checkpoints/state_last.pth           everything needed to resume (optimizers, schedulers, RNG, ...)
    summary.json                         the end summary

Every file is written atomically, so a ``kill -9`` leaves the previous complete version; running
the same command again resumes from ``state_last.pth``.

Example:
    >>> from dsa_plugin.gan import load_config, train
    >>> cfg = load_config("tiny", {"data.day": "day/", "data.night": "night/"})   # doctest: +SKIP
    >>> result = train(cfg, "runs/tiny")                                          # doctest: +SKIP
    >>> result.generator_path                                                     # doctest: +SKIP
    PosixPath('runs/tiny/checkpoints/generator_X_last.pth')
"""

from __future__ import annotations

import json
import logging
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsa_plugin.core.distributed import DistContext
from dsa_plugin.core.files import atomic_save, remove_stale_temps, write_json
from dsa_plugin.gan.config import ConfigError, GanConfig, get_key, load_config, save_yaml
from dsa_plugin.gan.data import EpochBatchSampler, build_dataset
from dsa_plugin.gan.networks import TRAINABLE, build_networks, build_optimizers, build_schedulers
from dsa_plugin.gan.samples import COLUMNS, sample_grid, save_png
from dsa_plugin.gan.scalars import ScalarLog
from dsa_plugin.gan.steps import make_step
from dsa_plugin.gan.warmup import identity_warmup

log = logging.getLogger("dsa_plugin.gan")

STATE_FORMAT = "dsa-gan-train-state/1"
#: config keys that must match to resume from a state file
RESUME_KEYS = ("variant", "model.ngf", "model.n_blocks", "model.ndf", "model.n_layers", "model.norm",
               "model.init_type", "model.init_gain", "model.hed_weights", "train.batch_size", "train.seed",
               "data.epoch_size",
               # what the steps see and how fast they learn: a resumed run with other data or another
               # learning rate would silently continue with the old optimizer lr / mix two datasets
               "data.day", "data.night", "data.root", "data.crop_size", "data.scale", "data.resize_short",
               "data.skip_bad_images", "optim.lr", "train.identity_warmup")
#: data keys that change nothing but speed: free to differ on resume
RESUME_FREE = ("data.num_workers", "data.cache_images")


class ResumeError(RuntimeError):
    """The output directory holds a training state that cannot be resumed with this config."""


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


def _generators(variant: str) -> tuple[str, ...]:
    return ("generator_X", "generator_Y") if variant == "cyclegan" else ("generator_X",)


class Trainer:
    def __init__(self, cfg: GanConfig, out_dir: "str | Path", resume: bool = True,
                 progress: bool | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.ctx = DistContext.from_env(cfg.device)
        self.device = self.ctx.device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {cfg.device!r} requested but CUDA is not available; use device=cpu")
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"
        if (cfg.train.amp or cfg.train.channels_last) and self.device.type != "cuda":
            warnings.warn("train.amp / train.channels_last only apply on CUDA; ignored on " + str(self.device))
        self.progress = cfg.train.progress if progress is None else progress
        self.ckpt_dir = self.out / "checkpoints"
        self.sample_dir = self.out / "samples"
        self.state_path = self.ckpt_dir / "state_last.pth"
        self.log_path = self.out / "log.jsonl"

        self.dataset = build_dataset(cfg.data, cfg.train.seed)
        per_iter = cfg.train.batch_size * self.ctx.world_size
        self.iters_per_epoch = cfg.data.epoch_size // per_iter
        if self.iters_per_epoch < 1:
            raise ConfigError(f"data.epoch_size ({cfg.data.epoch_size}) must be >= train.batch_size x processes "
                              f"({per_iter}) to give at least one iteration per epoch")
        planned = cfg.train.epochs * self.iters_per_epoch
        self.total = min(planned, cfg.train.max_iterations or planned)

        nets = build_networks(cfg)
        for net in nets.values():
            net.to(self.device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
        self.nets = nets
        self.optimizers = build_optimizers(cfg, nets)
        self.schedulers = build_schedulers(cfg, self.optimizers)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.step = make_step(cfg, nets, self.optimizers, wrap=self.ctx.wrap, scaler=self.scaler,
                              device_type=self.device.type, amp=self.amp)
        self.epoch, self.in_epoch, self.iteration = 0, 0, 0
        self.resumed_from: int | None = None
        self.elapsed_before = 0.0
        self.warmup: dict[str, Any] = {}
        if resume and self.state_path.is_file():
            if self.ctx.is_main:
                for path in remove_stale_temps(self.ckpt_dir):
                    log.info("removed %s, left by a killed save", path.name)
            self._load_state()
        elif not resume and self.ctx.is_main and self.state_path.is_file():
            log.info("resume disabled: starting over in %s", self.out)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        trainable = TRAINABLE[self.cfg.variant]
        rng = {"torch": torch.get_rng_state(), "python": list(random.getstate())}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": STATE_FORMAT, "config": self.cfg.to_dict(),
            "epoch": self.epoch, "iteration_in_epoch": self.in_epoch, "iteration": self.iteration,
            "world_size": self.ctx.world_size,
            "elapsed_s": self.elapsed_before + (time.perf_counter() - self.t0),
            "nets": {n: self.nets[n].state_dict() for n in trainable},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: {"last_epoch": s.last_epoch} for n, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step.state_dict(), "rng": rng,
        }

    def _load_state(self) -> None:
        from dsa_plugin.models.checkpoint_files import CheckpointError, load_checkpoint

        try:
            state = load_checkpoint(self.state_path, map_location="cpu")
        except CheckpointError as err:
            raise ResumeError(f"cannot resume from {self.state_path}: {err}. Delete it or pass --no-resume.") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ResumeError(f"{self.state_path} is not a dsa gan-train state (format "
                              f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                              f"expected {STATE_FORMAT!r})")
        old = GanConfig.from_dict(state["config"], where=str(self.state_path))
        diffs = [f"{k}: checkpoint {get_key(old, k)!r}, now {get_key(self.cfg, k)!r}"
                 for k in RESUME_KEYS if get_key(old, k) != get_key(self.cfg, k)]
        if diffs:
            raise ResumeError(f"{self.state_path} was written with a different config ({'; '.join(diffs)}); "
                              f"use another output directory or pass --no-resume to start over")
        world = state.get("world_size", 1)
        if state["iteration_in_epoch"] and world != self.ctx.world_size:
            raise ResumeError(f"{self.state_path} stopped in the middle of an epoch with {world} process(es); "
                              f"resume it with the same number of processes (now {self.ctx.world_size})")
        for name, sd in state["nets"].items():
            self.nets[name].load_state_dict(sd)
        for name, sd in state["optimizers"].items():
            self.optimizers[name].load_state_dict(sd)
        for name, sd in state["schedulers"].items():
            # the optimizer state already restored each group's lr; the scheduler only needs its epoch
            sched = self.schedulers[name]
            sched.last_epoch = sd["last_epoch"]
            sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step.load_state_dict(state.get("step") or {}, self.device)
        torch.set_rng_state(state["rng"]["torch"])
        version, internal, gauss = state["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch, self.in_epoch = state["epoch"], state["iteration_in_epoch"]
        self.iteration = self.resumed_from = state["iteration"]
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if self.ctx.is_main:
            log.info("resumed from %s: epoch %d, iteration %d", self.state_path, self.epoch, self.iteration)

    def _save(self, epoch_snapshot: int | None = None) -> None:
        """Generator(s) `_last` (+ `_epoch_XX`) in the reference layout, then the resumable state."""
        if not self.ctx.is_main:
            return
        from dsa_plugin.models.checkpoints import save_network

        for name in _generators(self.cfg.variant):
            net = self.nets[name]
            save_network(self.ckpt_dir / f"{name}_last.pth", net)
            if epoch_snapshot is not None:
                save_network(self.ckpt_dir / f"{name}_epoch_{epoch_snapshot:02d}.pth", net)
        atomic_save(self._state(), self.state_path)
        self.last_saved = self.iteration

    # ------------------------------------------------------------------ loop
    def _loader(self):
        sampler = EpochBatchSampler(self.cfg.data.epoch_size, self.cfg.train.batch_size, self.ctx.rank,
                                    self.ctx.world_size, start=self.in_epoch)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.cfg.data.num_workers,
                                           pin_memory=self.device.type == "cuda")

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _log_row(self, losses: dict[str, torch.Tensor], t_start: float, it_start: int) -> dict[str, Any]:
        keys = sorted(losses)
        values = self.ctx.mean(torch.stack([losses[k].float() for k in keys])).tolist()
        lr_opt = self.optimizers["generator_X"]
        row = {"iteration": self.iteration, "epoch": self.epoch, **{k: round(v, 6) for k, v in zip(keys, values)},
               "lr": lr_opt.param_groups[0]["lr"]}
        dt = time.perf_counter() - t_start
        row["its_per_s"] = round((self.iteration - it_start) / dt, 4) if dt > 0 else None
        return row

    def run(self) -> TrainResult:
        cfg, main = self.cfg, self.ctx.is_main
        self.t0 = time.perf_counter()
        self.last_saved = self.iteration if self.resumed_from is not None else -1
        sample_paths: list[Path] = sorted(self.sample_dir.glob("iter_*.png")) if self.resumed_from else []
        scalars = None
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.out / "config.yaml")
            scalars = ScalarLog(self.log_path, self.out / "tensorboard",
                                keep_until=self.iteration if self.resumed_from is not None else None)
        bar = None
        if main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total, initial=self.iteration, desc=f"gan-train {cfg.variant}", unit="it",
                       dynamic_ncols=True)
        if self.resumed_from is None and cfg.train.identity_warmup:
            self._identity_warmup(scalars)
        it_start, t_start = self.iteration, time.perf_counter()
        losses, visuals, last_row = None, None, None
        columns = COLUMNS["cyclegan" if cfg.variant == "cyclegan" else "hed"]
        try:
            while self.iteration < self.total and self.epoch < cfg.train.epochs:
                self.dataset.set_epoch(self.epoch)
                for day, night in self._loader():
                    losses, visuals = self.step(self._to_device(day), self._to_device(night))
                    self.iteration += 1
                    self.in_epoch += 1
                    if self.iteration % cfg.train.log_every == 0 or self.iteration == self.total:
                        last_row = self._log_row(losses, t_start, it_start)
                        if main:
                            scalars.write(last_row)
                            if bar is not None:
                                bar.set_postfix({k: f"{last_row[k]:.3g}" for k in ("D", "G", "E", "G_X", "D_X")
                                                 if k in last_row})
                    if main and cfg.train.sample_every and self.iteration % cfg.train.sample_every == 0:
                        path = self.sample_dir / f"iter_{self.iteration:06d}.png"
                        sample_paths.append(save_png(sample_grid(visuals, columns), path))
                    if bar is not None:
                        bar.update(1)
                    every = cfg.train.checkpoint_every_iters
                    iter_ckpt = bool(every) and self.iteration % every == 0
                    if self.in_epoch >= self.iters_per_epoch or self.iteration >= self.total:
                        break
                    if iter_ckpt:
                        self._save()
                if self.in_epoch >= self.iters_per_epoch:  # epoch complete
                    for sched in self.schedulers.values():
                        sched.step()
                    self.epoch += 1
                    self.in_epoch = 0
                    if self.epoch % cfg.train.checkpoint_every == 0 or self.epoch == cfg.train.epochs:
                        self._save(epoch_snapshot=self.epoch)
                    elif iter_ckpt:
                        self._save()
            if self.last_saved != self.iteration:
                self._save()
            if main and visuals is not None:
                sample_paths.append(save_png(sample_grid(visuals, columns), self.sample_dir / "final.png"))
        finally:
            if bar is not None:
                bar.close()
            if scalars is not None:
                scalars.close()
        self.ctx.barrier()
        result = self._result(sample_paths, it_start, t_start, last_row)
        return result

    def _warmup_batches(self):
        """``train.identity_warmup`` batches of day and night crops (batch_size of each), the same
        on every process, drawn from epochs -1, -2, ... so that training's own pairs are unchanged."""
        n, bs = self.cfg.train.identity_warmup, self.cfg.train.batch_size
        per_epoch = max(self.cfg.data.epoch_size // bs, 1)
        for k in range(n):
            epoch, first = -1 - k // per_epoch, (k % per_epoch) * bs
            if first == 0:
                self.dataset.set_epoch(epoch)
            pairs = [self.dataset[i] for i in range(first, first + bs)]
            yield self._to_device(torch.stack([crop for pair in pairs for crop in pair]))
        self.dataset.set_epoch(self.epoch)

    def _identity_warmup(self, scalars) -> None:
        t = time.perf_counter()
        for name in _generators(self.cfg.variant):
            batches = self._warmup_batches()
            if self.ctx.is_main and self.progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, total=self.cfg.train.identity_warmup, desc=f"identity warm-up {name}",
                               unit="it", dynamic_ncols=True)
            losses = identity_warmup(self.nets[name], batches, lr=self.cfg.optim.lr,
                                     betas=tuple(self.cfg.optim.betas))
            self.warmup[name] = {"iterations": len(losses), "l1_first": round(losses[0], 6),
                                 "l1_last": round(losses[-1], 6)}
        self.warmup["seconds"] = round(time.perf_counter() - t, 3)
        if self.ctx.is_main:
            log.info("identity warm-up: %s", self.warmup)
            if scalars is not None:
                scalars.write({"iteration": 0, "epoch": -1, **{f"warmup_L1_{n}": w["l1_last"]
                                                               for n, w in self.warmup.items() if n != "seconds"}})

    def _result(self, sample_paths, it_start, t_start, last_row) -> TrainResult:
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

    def close(self) -> None:
        self.ctx.close()


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


def train(config: "GanConfig | str | Path | dict | None" = None, out_dir: "str | Path" = "runs/gan",
          device: str | None = None, overrides: "list[str] | dict[str, Any] | None" = None,
          resume: bool = True, progress: bool | None = None) -> TrainResult:
    """Train a day->night GAN and return what it wrote.

    Args:
        config: a GanConfig, a preset name (``"tiny"``, ``"hedngan"``, ...), a YAML path or a dict.
        out_dir: output directory; an existing training state there is resumed (unless ``resume=False``).
        device: overrides ``config.device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        overrides: dotted-key overrides (``{"data.day": "day.txt"}`` or ``["train.max_iterations=50"]``).
        progress: show the tqdm bar (default: ``config.train.progress``).

    Returns:
        :class:`TrainResult` with ``generator_path`` (reference 4-key layout), ``log_path``,
        ``sample_paths`` and the summary.
    """
    over = dict(overrides) if isinstance(overrides, dict) else {}
    listed = list(overrides) if isinstance(overrides, (list, tuple)) else []
    if device is not None:
        over["device"] = device
    cfg = load_config(config, over)
    if listed:
        cfg = load_config(cfg, listed)
    trainer = Trainer(cfg, out_dir, resume=resume, progress=progress)
    try:
        return trainer.run()
    finally:
        trainer.close()
