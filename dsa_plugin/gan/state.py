"""The GAN trainer's resumable state: what ``checkpoints/state_last.pth`` holds and how a run resumes.

:class:`ResumableState` is the part of :class:`~dsa_plugin.gan.trainer.Trainer` that writes the
generators (reference 4-key layout) and the state file, and reads the state back after checking
that the run's config agrees (:data:`RESUME_KEYS`).

Example:
    >>> generators("cyclegan"), generators("hedngan")
    (('generator_X', 'generator_Y'), ('generator_X',))
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import torch

from dsa_plugin.core.files import atomic_save
from dsa_plugin.gan.config import GanConfig
from dsa_plugin.gan.ema import WeightAverage
from dsa_plugin.gan.networks import TRAINABLE
from dsa_plugin.gan.validation import get_key
from dsa_plugin.models.checkpoint_files import CheckpointError, load_checkpoint
from dsa_plugin.models.checkpoints import save_network

__all__ = ["RESUME_FREE", "RESUME_KEYS", "STATE_FORMAT", "ResumableState", "ResumeError", "generators"]

log = logging.getLogger("dsa_plugin.gan")

STATE_FORMAT = "dsa-gan-train-state/1"
#: config keys that must match to resume from a state file
RESUME_KEYS = ("variant", "model.ngf", "model.n_blocks", "model.ndf", "model.n_layers", "model.norm",
               "model.init_type", "model.init_gain", "model.hed_weights", "train.batch_size", "train.seed",
               "data.epoch_size",
               # what the steps see and how fast they learn: a resumed run with other data or another
               # learning rate would silently continue with the old optimizer lr / mix two datasets
               "data.day", "data.night", "data.root", "data.crop_size", "data.scale", "data.resize_short",
               "data.skip_bad_images", "optim.lr", "train.identity_warmup", "train.warmup_target", "train.warmup_lr",
               "train.ema",
               "model.rcf_weights", "model.mlp_nc", "loss.nce_layers")
#: data keys that change nothing but speed: free to differ on resume
RESUME_FREE = ("data.num_workers", "data.cache_images")


class ResumeError(RuntimeError):
    """The output directory holds a training state that cannot be resumed with this config."""


def generators(variant: str) -> tuple[str, ...]:
    """The generators a variant trains and saves (CycleGAN: both directions).

    Example:
        >>> generators("cyclegan"), generators("hedngan")
        (('generator_X', 'generator_Y'), ('generator_X',))
    """
    return ("generator_X", "generator_Y") if variant == "cyclegan" else ("generator_X",)


def _restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


class ResumableState:
    """Saving and resuming for :class:`~dsa_plugin.gan.trainer.Trainer` (uses its nets, optimizers,
    schedulers, scaler, step, counters and paths)."""

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
            "ema": {n: avg.state_dict() for n, avg in self.ema.items()},
        }

    def _load_state(self) -> None:
        state = self._read_state()
        for name, sd in state["nets"].items():
            self.nets[name].load_state_dict(sd)
        for name, sd in (state.get("ema") or {}).items():
            self.ema[name] = WeightAverage(self.nets[name], self.cfg.train.ema)
            self.ema[name].load_state_dict(sd)
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
        _restore_rng(state["rng"], self.device)
        self.epoch, self.in_epoch = state["epoch"], state["iteration_in_epoch"]
        self.iteration = self.resumed_from = state["iteration"]
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if self.ctx.is_main:
            log.info("resumed from %s: epoch %d, iteration %d", self.state_path, self.epoch, self.iteration)

    def _read_state(self) -> dict[str, Any]:
        """The state file, checked: our format, the same config keys, the same processes mid-epoch."""
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
        return state

    def _save(self, epoch_snapshot: int | None = None) -> None:
        """Generator(s) `_last` (+ `_epoch_XX`) in the reference layout, then the resumable state."""
        if not self.ctx.is_main:
            return
        for name in generators(self.cfg.variant):
            net = self.ema[name].module if name in self.ema else self.nets[name]  # train.ema: the average
            save_network(self.ckpt_dir / f"{name}_last.pth", net)
            if epoch_snapshot is not None:
                save_network(self.ckpt_dir / f"{name}_epoch_{epoch_snapshot:02d}.pth", net)
        atomic_save(self._state(), self.state_path)
        self.last_saved = self.iteration
