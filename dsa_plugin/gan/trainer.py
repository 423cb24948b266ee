"""The GAN training loop: data, steps, checkpoints/resume, sample grids, scalar logs, DDP.

The loop is here; the resumable state (save / load) is :mod:`dsa_plugin.gan.state`, the run's
result and summary :mod:`dsa_plugin.gan.summary`.

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

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dsa_plugin.core.distributed import DistContext
from dsa_plugin.core.files import remove_stale_temps
from dsa_plugin.gan.config import ConfigError, GanConfig, load_config, save_yaml
from dsa_plugin.gan.data import EpochBatchSampler, build_dataset
from dsa_plugin.gan.ema import WeightAverage
from dsa_plugin.gan.networks import build_networks, build_optimizers, build_schedulers
from dsa_plugin.gan.quantile_match import QuantileMatch
from dsa_plugin.gan.samples import COLUMNS, sample_grid, save_png
from dsa_plugin.gan.scalars import ScalarLog
from dsa_plugin.gan.state import ResumableState, generators
from dsa_plugin.gan.summary import RunSummary, TrainResult
from dsa_plugin.gan.variant_steps import make_step
from dsa_plugin.gan.warmup import warmup_fit

__all__ = ["DivergedError", "Trainer", "train"]

log = logging.getLogger("dsa_plugin.gan")


class DivergedError(RuntimeError):
    """A loss became NaN or infinite: training stopped at that iteration, nothing of it was saved."""


class Trainer(ResumableState, RunSummary):
    """One GAN training run in ``out_dir``: networks, data, the loop; resumes a state found there."""

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
        self.ema: dict[str, WeightAverage] = {}  # train.ema: made after the warm-up, or from the state
        if resume and self.state_path.is_file():
            if self.ctx.is_main:
                for path in remove_stale_temps(self.ckpt_dir):
                    log.info("removed %s, left by a killed save", path.name)
            self._load_state()
        elif not resume and self.ctx.is_main and self.state_path.is_file():
            log.info("resume disabled: starting over in %s", self.out)

    # ------------------------------------------------------------------ state
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
        """Train to ``train.epochs`` (or ``train.max_iterations``), logging, sampling and saving on the way."""
        self.t0 = time.perf_counter()
        self.last_saved = self.iteration if self.resumed_from is not None else -1
        self.sample_paths: list[Path] = sorted(self.sample_dir.glob("iter_*.png")) if self.resumed_from else []
        self.scalars, self.bar = self._open_outputs()
        if self.resumed_from is None and self.cfg.train.identity_warmup:
            self._identity_warmup(self.scalars)
        if self.resumed_from is None and self.cfg.train.ema:
            self.ema = {name: WeightAverage(self.nets[name], self.cfg.train.ema)
                        for name in generators(self.cfg.variant)}
        it_start, t_start = self.iteration, time.perf_counter()
        self.last_row, visuals = None, None
        columns = COLUMNS.get(self.cfg.variant, COLUMNS["hed"])
        try:
            while self.iteration < self.total and self.epoch < self.cfg.train.epochs:
                visuals, iter_ckpt = self._train_epoch(visuals, columns, t_start, it_start)
                self._end_epoch(iter_ckpt)
            if self.last_saved != self.iteration:
                self._save()
            if self.ctx.is_main and visuals is not None:
                self.sample_paths.append(save_png(sample_grid(visuals, columns), self.sample_dir / "final.png"))
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.scalars is not None:
                self.scalars.close()
        self.ctx.barrier()
        return self._result(self.sample_paths, it_start, t_start, self.last_row)

    def _open_outputs(self):
        """(scalar log, progress bar) of the main process: ``None``, ``None`` on the others."""
        if not self.ctx.is_main:
            return None, None
        self.out.mkdir(parents=True, exist_ok=True)
        save_yaml(self.cfg, self.out / "config.yaml")
        scalars = ScalarLog(self.log_path, self.out / "tensorboard",
                            keep_until=self.iteration if self.resumed_from is not None else None)
        bar = None
        if self.progress:
            bar = tqdm(total=self.total, initial=self.iteration, desc=f"gan-train {self.cfg.variant}", unit="it",
                       dynamic_ncols=True)
        return scalars, bar

    def _train_epoch(self, visuals, columns, t_start: float, it_start: int):
        """Iterations until the epoch (or the run) ends; returns (the last visuals, whether an
        iteration checkpoint fell on the last iteration)."""
        self.dataset.set_epoch(self.epoch)
        iter_ckpt = False
        for day, night in self._loader():
            losses, visuals = self.step(self._to_device(day), self._to_device(night))
            self._check_finite(losses)
            for name, average in self.ema.items():
                average.update(self.nets[name])
            self.iteration += 1
            self.in_epoch += 1
            self._report(losses, visuals, columns, t_start, it_start)
            every = self.cfg.train.checkpoint_every_iters
            iter_ckpt = bool(every) and self.iteration % every == 0
            if self.in_epoch >= self.iters_per_epoch or self.iteration >= self.total:
                break
            if iter_ckpt:
                self._save()
        return visuals, iter_ckpt

    def _report(self, losses, visuals, columns, t_start: float, it_start: int) -> None:
        """Scalars every ``train.log_every`` iterations (all processes average them), sample grids, the bar."""
        cfg, main = self.cfg, self.ctx.is_main
        if self.iteration % cfg.train.log_every == 0 or self.iteration == self.total:
            self.last_row = self._log_row(losses, t_start, it_start)
            if main:
                self.scalars.write(self.last_row)
                if self.bar is not None:
                    self.bar.set_postfix({k: f"{self.last_row[k]:.3g}" for k in ("D", "G", "E", "G_X", "D_X")
                                          if k in self.last_row})
        if main and cfg.train.sample_every and self.iteration % cfg.train.sample_every == 0:
            path = self.sample_dir / f"iter_{self.iteration:06d}.png"
            self.sample_paths.append(save_png(sample_grid(visuals, columns), path))
        if self.bar is not None:
            self.bar.update(1)

    def _end_epoch(self, iter_ckpt: bool) -> None:
        """After a complete epoch: step the schedulers, save (epoch snapshot or iteration checkpoint)."""
        if self.in_epoch < self.iters_per_epoch:
            return
        for sched in self.schedulers.values():
            sched.step()
        self.epoch += 1
        self.in_epoch = 0
        if self.epoch % self.cfg.train.checkpoint_every == 0 or self.epoch == self.cfg.train.epochs:
            self._save(epoch_snapshot=self.epoch)
        elif iter_ckpt:
            self._save()

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Stop at the first iteration with a NaN/inf loss (over all processes: they stop together).

        The networks have already taken that step, so nothing is saved: the last checkpoint in
        the output folder stays the last finite state.
        """
        keys = sorted(losses)
        values = self.ctx.mean(torch.stack([losses[k].detach().float().reshape(()) for k in keys]))
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad = ", ".join(f"{k}={v:g}" for k, v, ok in zip(keys, values.tolist(), finite.tolist()) if not ok)
        saved = (f"the last checkpoint in {self.out} is from iteration {self.last_saved}"
                 if self.last_saved >= 0 else "nothing was saved")
        raise DivergedError(f"iteration {self.iteration + 1}: non-finite loss ({bad}); training stopped, {saved}. "
                            "Lower optim.lr or the loss weights, or check the input images")

    def _warmup_batches(self, side: str | None = None, target=None):
        """``train.identity_warmup`` ``(x, target)`` batches, the same on every process, drawn from
        epochs -1, -2, ... so that training's own pairs are unchanged: day and night crops
        (batch_size of each) fitted to themselves, or only the ``side`` ("day" / "night") crops
        fitted to ``target`` of them."""
        n, bs = self.cfg.train.identity_warmup, self.cfg.train.batch_size
        per_epoch = max(self.cfg.data.epoch_size // bs, 1)
        for k in range(n):
            epoch, first = -1 - k // per_epoch, (k % per_epoch) * bs
            if first == 0:
                self.dataset.set_epoch(epoch)
            pairs = [self.dataset[i] for i in range(first, first + bs)]
            if side is None:
                x = self._to_device(torch.stack([crop for pair in pairs for crop in pair]))
                yield x, x
            else:
                x = torch.stack([pair[0 if side == "day" else 1] for pair in pairs])
                yield self._to_device(x), self._to_device(target(x))
        self.dataset.set_epoch(self.epoch)

    def _night_colours(self) -> QuantileMatch:
        """Day→night quantile map of the GAN's own day and night photos, in the networks' [-1, 1]."""
        scaled = lambda paths: (self.dataset.load(p).float() / 127.5 - 1 for p in paths)  # noqa: E731
        return QuantileMatch.fit(scaled(self.dataset.day), scaled(self.dataset.night), seed=self.cfg.train.seed)

    def _identity_warmup(self, scalars) -> None:
        t = time.perf_counter()
        target = self.cfg.train.warmup_target
        maps = {}
        if target == "night-colours":
            colours = self._night_colours()
            # day->night generators learn the re-grading of day crops, night->day ones the inverse
            # of night crops: one pixel-wise function each (with the identity on the other domain's
            # crops as well, the same pixel value would have two targets)
            maps = {"generator_X": ("day", colours), "generator_Y": ("night", colours.inverse())}
        lr = self.cfg.train.warmup_lr or self.cfg.optim.lr
        for name in generators(self.cfg.variant):
            batches = self._warmup_batches(*maps.get(name, ()))
            if self.ctx.is_main and self.progress:
                batches = tqdm(batches, total=self.cfg.train.identity_warmup, desc=f"{target} warm-up {name}",
                               unit="it", dynamic_ncols=True)
            losses = warmup_fit(self.nets[name], batches, lr=lr, betas=tuple(self.cfg.optim.betas))
            self.warmup[name] = {"iterations": len(losses), "l1_first": round(losses[0], 6),
                                 "l1_last": round(losses[-1], 6)}
        self.warmup["target"] = target
        self.warmup["seconds"] = round(time.perf_counter() - t, 3)
        if self.ctx.is_main:
            log.info("%s warm-up: %s", target, self.warmup)
            if scalars is not None:
                scalars.write({"iteration": 0, "epoch": -1, **{f"warmup_L1_{n}": w["l1_last"]
                                                               for n, w in self.warmup.items() if isinstance(w, dict)}})

    def close(self) -> None:
        self.ctx.close()


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
