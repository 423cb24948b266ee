"""One iteration of CUT, RCF GAN and RCF^N GAN, in the reference's order (docs/gan.md §variants).

CUT (the reference's ``SupervisedCUTEpoch``):

1. ``G([day; night])`` in one call: ``fake`` = G(day), ``idt`` = G(night).
2. Discriminator step: ``0.5 (MSE(D(night), real) + MSE(D(fake.detach()), fake))``.
3. Generator + MLP step: ``adversarial * MSE(D(fake), real) + (nce + idt) / 2`` with
   ``nce = PatchNCE(G-features of fake vs day)``, ``idt = identity * PatchNCE(G-features of idt vs
   night)`` (:func:`~dsa_plugin.gan.nce.cut_nce_loss`); then G's and the MLP's optimizer steps.

Numerically the reference's step; it only skips work whose result is unused: the key features
(of day and night) are computed without autograd (the loss detaches them), D's parameter gradients
of step 3 are not computed, and the G-side feature passes run inside the first generator call (G has
not changed yet, and under DDP each optimised network then gets one forward per backward). Patch
positions come from the step's own seeded ``torch.Generator`` (the reference: NumPy's global RNG),
saved with the training state so that a resumed run draws the same positions.

RCF GAN / RCF^N GAN are the HED GAN / HED^N GAN steps with the RCF input wrapper (BGR x255 minus
the Caffe means) in place of HED's.
"""

from __future__ import annotations

import torch
from torch import nn

from dsa_plugin.gan.losses import discriminator_loss, lsgan_loss
from dsa_plugin.gan.nce import cut_nce_loss
from dsa_plugin.gan.steps import GanStep, HedGanStep, HedNGanStep, _Pair, _visuals, frozen
from dsa_plugin.models.patch_mlp import generator_features, parse_layers
from dsa_plugin.models.rcf import rcf_preprocess

__all__ = ["CutStep", "RcfGanStep", "RcfNGanStep", "ZOO_STEPS"]


class _CutGenerator(nn.Module):
    """G on [day; night] plus the four feature passes of PatchNCE, in the reference's order
    (query of G(day), key of day, query of G(night), key of night), as one module call."""

    def __init__(self, generator: nn.Module, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.generator, self.layers = generator, layers

    def _keys(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return generator_features(self.generator, x, self.layers)

    def forward(self, real_x: torch.Tensor, real_y: torch.Tensor):
        fake = self.generator(torch.cat([real_x, real_y], dim=0))
        fake_y, idt_y = fake[:real_x.shape[0]], fake[real_x.shape[0]:]
        q_x = generator_features(self.generator, fake_y, self.layers)
        k_x = self._keys(real_x)
        q_y = generator_features(self.generator, idt_y, self.layers)
        k_y = self._keys(real_y)
        return fake_y, idt_y, (q_x, k_x, q_y, k_y)


class _Featdown(nn.Module):
    """The MLP's four calls (keys draw the positions, queries reuse them) as one module call."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, feats, num_patches: int, rng: torch.Generator):
        q_x, k_x, q_y, k_y = feats
        with torch.no_grad():  # the loss detaches the keys: no gradient reaches the MLP through them
            pooled_k_x, ids_x = self.mlp(k_x, num_patches, generator=rng)
        pooled_q_x, _ = self.mlp(q_x, num_patches, patch_ids=ids_x)
        with torch.no_grad():
            pooled_k_y, ids_y = self.mlp(k_y, num_patches, generator=rng)
        pooled_q_y, _ = self.mlp(q_y, num_patches, patch_ids=ids_y)
        return pooled_q_x, pooled_k_x, pooled_q_y, pooled_k_y


class CutStep(GanStep):
    """D step -> G + featdown step (docs/gan.md §cut)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        nets, loss = self.nets, self.cfg.loss
        self.cut_generator = self.wrap(_CutGenerator(nets["generator_X"], parse_layers(loss.nce_layers)))
        self.discriminator_pair = self.wrap(_Pair(nets["discriminator_Y"]))
        self.featdown = self.wrap(_Featdown(nets["featdown"]))
        self.patch_rng = torch.Generator().manual_seed(self.cfg.train.seed * 2 + 3)

    def __call__(self, real_x, real_y):
        w = self.loss_weights
        discriminator = self.nets["discriminator_Y"]
        with self.autocast():
            fake_y, idt_y, feats = self.cut_generator(real_x, real_y)
            self._zero("discriminator_Y")
            pred_real, pred_fake = self.discriminator_pair(real_y, fake_y.detach())
            loss_d, d_real, d_fake = discriminator_loss(pred_real, pred_fake, w.adversarial)
        self._backward(loss_d)
        self._step("discriminator_Y")

        with frozen(discriminator), self.autocast():
            self._zero("generator_X")
            self._zero("featdown")
            g_gan = w.adversarial * lsgan_loss(discriminator(fake_y), real=True)
            q_x, k_x, q_y, k_y = self.featdown(feats, w.num_patches, self.patch_rng)
            g_nce, nce_x, g_idt = cut_nce_loss(q_x, k_x, q_y, k_y, w.nce, w.identity, w.nce_temperature)
            loss_g = g_gan + g_nce
        self._backward(loss_g)
        self._step("generator_X")
        self._step("featdown")
        self._finish()

        losses = {"total": loss_g + loss_d, "D": loss_d, "D_real": d_real, "D_fake": d_fake, "G": loss_g,
                  "G_gan": g_gan, "G_nce": g_nce, "G_nce_X": nce_x, "G_idt": g_idt}
        visuals = _visuals(day=real_x, fake=fake_y, night=real_y, idt=idt_y)
        return {k: v.detach() for k, v in losses.items()}, visuals

    def state_dict(self) -> dict:
        return {"patch_rng": self.patch_rng.get_state()}

    def load_state_dict(self, state: dict, device="cpu") -> None:
        if "patch_rng" in state:
            self.patch_rng.set_state(state["patch_rng"])


class RcfGanStep(HedGanStep):
    """HED GAN's iteration with the RCF detector and its input wrapper."""

    preprocess = staticmethod(rcf_preprocess)


class RcfNGanStep(HedNGanStep):
    """HED^N GAN's iteration with the RCF student / teacher and their input wrapper."""

    preprocess = staticmethod(rcf_preprocess)


ZOO_STEPS = {"cut": CutStep, "rcfgan": RcfGanStep, "rcfngan": RcfNGanStep}
