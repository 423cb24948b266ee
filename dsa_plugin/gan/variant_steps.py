"""The training step of every GAN variant: the paper's three (:mod:`.steps`) and the zoo's (:mod:`.zoo_steps`)."""

from __future__ import annotations

from dsa_plugin.gan.steps import STEPS, GanStep
from dsa_plugin.gan.zoo_steps import ZOO_STEPS

__all__ = ["make_step"]


def make_step(cfg, nets, optimizers, **kwargs) -> GanStep:
    """The step object of ``cfg.variant`` (networks must already be on their device)."""
    return {**STEPS, **ZOO_STEPS}[cfg.variant](cfg, nets, optimizers, **kwargs)
