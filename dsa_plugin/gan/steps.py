"""One optimisation iteration per variant, in the reference's order (docs/reference.md §gan-step-order).

Numerically these are the reference's steps; they only skip work whose result is never used:

* HEDN GAN: the frozen teacher runs once per iteration under ``no_grad`` (the reference runs it
  twice, with autograd, and back-propagates into its parameters); its sigmoid edges for the G step
  are the sigmoid of the logits already computed for the detector step (the teacher does not change
  in between); the logging-only ``student(real_X)`` pass of the G step is skipped.
* In every G step the discriminator(s) and the HED student are temporarily frozen: the reference
  computes their parameter gradients there and throws them away (the next zero_grad).
* HED GAN: the frozen detector's edges of the real image are computed without autograd.

Under DistributedDataParallel each network that is optimised gets one DDP forward per backward
(pairs of calls are bundled into one module call); calls whose parameter gradients are unused go
to the plain module.

Example:
    >>> step = make_step(cfg, nets, optimizers)                 # doctest: +SKIP
    >>> losses, visuals = step(day, night)  # [-1, 1] batches     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from dsa_plugin.gan.config import GanConfig
from dsa_plugin.gan.image_pool import ImagePool
from dsa_plugin.gan.losses import discriminator_loss, l1_loss, lsgan_loss
from dsa_plugin.models import hed_preprocess

N_VISUALS = 4


class _Pair(nn.Module):
    """Calls ``net`` on two inputs separately (batch statistics stay per input, as the reference)
    inside one module call, so that DDP sees one forward per backward. The ``*_pair`` attributes of
    the steps below are these, wrapped for DDP."""

    def __init__(self, net: nn.Module, **kwargs) -> None:
        super().__init__()
        self.net, self.kwargs = net, kwargs

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(a, **self.kwargs), self.net(b, **self.kwargs)


class _Cycle(nn.Module):
    """The four generator calls of CycleGAN as one module call."""

    def __init__(self, g_x: nn.Module, g_y: nn.Module) -> None:
        super().__init__()
        self.g_x, self.g_y = g_x, g_y

    def forward(self, real_x: torch.Tensor, real_y: torch.Tensor):
        fake_y = self.g_x(real_x)
        rec_x = self.g_y(fake_y)
        fake_x = self.g_y(real_y)
        rec_y = self.g_x(fake_x)
        return fake_y, rec_x, fake_x, rec_y


@contextlib.contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """Turn off requires_grad of every parameter of ``nets`` for the block (gradients still flow
    through them to their inputs), then restore the previous flags.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> with frozen(net):
        ...     print(net.weight.requires_grad)
        False
        >>> net.weight.requires_grad
        True
    """
    params = [p for net in nets for p in net.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class GanStep:
    """Base: holds networks, optimizers, the optional AMP scaler and the DDP wrappers."""

    def __init__(self, cfg: GanConfig, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 wrap: Callable[[nn.Module], nn.Module] | None = None, scaler=None, device_type: str = "cpu",
                 amp: bool = False) -> None:
        self.cfg, self.nets, self.optimizers = cfg, nets, optimizers
        self.loss_weights = cfg.loss
        self.wrap = wrap or (lambda m: m)
        self.scaler = scaler
        self.device_type, self.amp = device_type, amp

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=torch.float16)

    def _zero(self, name: str) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _step(self, name: str) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizers[name])
        else:
            self.optimizers[name].step()

    def _finish(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, device="cpu") -> None:
        pass

    def __call__(self, real_x: torch.Tensor, real_y: torch.Tensor):
        raise NotImplementedError


def _visuals(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[:N_VISUALS].detach().float() for k, v in tensors.items()}


class _EdgeGanStep(GanStep):
    """The generator step both HED GANs share: adversarial + weighted edge L1, then the update.
    ``preprocess`` maps generator RGB to the detector's input (the RCF variants override it)."""

    preprocess = staticmethod(hed_preprocess)

    def _edge_generator_step(self, fake_y, fake_e, real_e):
        """``fake_e`` must carry the graph back to the generator; returns (loss, adversarial, edge)."""
        weights = self.loss_weights
        with frozen(self.nets["discriminator_Y"]), self.autocast():
            self._zero("generator_X")
            g_gan = weights.adversarial * lsgan_loss(self.nets["discriminator_Y"](fake_y), real=True)
            g_hed = weights.edge * l1_loss(fake_e, real_e)
            loss_g = g_gan + g_hed
        self._backward(loss_g)
        self._step("generator_X")
        self._finish()
        return loss_g, g_gan, g_hed


class HedNGanStep(_EdgeGanStep):
    """D step -> detector (student) step -> G step (docs/reference.md §gan-step-order)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        nets = self.nets
        self.generator = self.wrap(nets["generator_X"])
        # discriminator_Y on (real night, fake night); the student's logits on (real day, fake night)
        self.discriminator_pair = self.wrap(_Pair(nets["discriminator_Y"]))
        self.student_pair = self.wrap(_Pair(nets["detector"], no_sigmoid=True))

    def __call__(self, real_x, real_y):
        weights = self.loss_weights
        student, teacher = self.nets["detector"], self.nets["detector_frozen"]
        with self.autocast():
            fake_y = self.generator(real_x)

            # (1) discriminator
            self._zero("discriminator_Y")
            pred_real, pred_fake = self.discriminator_pair(real_y, fake_y.detach())
            loss_d, d_real, d_fake = discriminator_loss(pred_real, pred_fake, weights.adversarial)
        self._backward(loss_d)
        self._step("discriminator_Y")

        # (2) detector student vs frozen teacher, on logits; target = teacher on the real day image
        with self.autocast():
            pre_x = self.preprocess(real_x)
            with torch.no_grad():
                target = teacher(pre_x, no_sigmoid=True)
            self._zero("detector")
            real_logits, fake_logits = self.student_pair(pre_x, self.preprocess(fake_y.detach()))
            e_real = weights.hed * l1_loss(real_logits, target)
            e_fake = weights.hed * l1_loss(fake_logits, target)
            loss_e = e_real + e_fake
        self._backward(loss_e)
        self._step("detector")

        # (3) generator: adversarial + edge L1 of the updated student on G(day) vs the teacher on day
        with frozen(student), self.autocast():
            fake_e = student(self.preprocess(fake_y))
            real_e = torch.sigmoid(target)
        loss_g, g_gan, g_hed = self._edge_generator_step(fake_y, fake_e, real_e)

        losses = {"total": loss_g + loss_d, "D": loss_d, "D_real": d_real, "D_fake": d_fake,
                  "G": loss_g, "G_gan": g_gan, "G_hed": g_hed, "E": loss_e, "E_real": e_real, "E_fake": e_fake}
        visuals = _visuals(day=real_x, fake=fake_y, night=real_y, edge_day=real_e, edge_fake=fake_e)
        return {k: v.detach() for k, v in losses.items()}, visuals


class HedGanStep(_EdgeGanStep):
    """Frozen detector: D step -> G step with adversarial + edge L1 (docs/reference.md §gan-step-order)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = self.wrap(self.nets["generator_X"])
        self.discriminator_pair = self.wrap(_Pair(self.nets["discriminator_Y"]))

    def __call__(self, real_x, real_y):
        weights = self.loss_weights
        detector = self.nets["detector"]
        with self.autocast():
            fake_y = self.generator(real_x)
            fake_e = detector(self.preprocess(fake_y))
            with torch.no_grad():
                real_e = detector(self.preprocess(real_x))
            self._zero("discriminator_Y")
            pred_real, pred_fake = self.discriminator_pair(real_y, fake_y.detach())
            loss_d, d_real, d_fake = discriminator_loss(pred_real, pred_fake, weights.adversarial)
        self._backward(loss_d)
        self._step("discriminator_Y")

        loss_g, g_gan, g_hed = self._edge_generator_step(fake_y, fake_e, real_e)

        losses = {"total": loss_g + loss_d, "D": loss_d, "D_real": d_real, "D_fake": d_fake,
                  "G": loss_g, "G_gan": g_gan, "G_hed": g_hed}
        visuals = _visuals(day=real_x, fake=fake_y, night=real_y, edge_day=real_e, edge_fake=fake_e)
        return {k: v.detach() for k, v in losses.items()}, visuals


class CycleGanStep(GanStep):
    """Both generators first (adversarial + 10·cycle L1, no identity loss), then D_X on
    (real_Y, pool(fake_Y)) and D_Y on (real_X, pool(fake_X)) (docs/reference.md §gan-step-order)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        nets = self.nets
        self.cycle = self.wrap(_Cycle(nets["generator_X"], nets["generator_Y"]))
        self.discriminator_x_pair = self.wrap(_Pair(nets["discriminator_X"]))
        self.discriminator_y_pair = self.wrap(_Pair(nets["discriminator_Y"]))
        seed = self.cfg.train.seed
        self.pool_y = ImagePool(self.cfg.loss.pool_size, seed=seed * 2 + 1)  # fakes judged by D_X
        self.pool_x = ImagePool(self.cfg.loss.pool_size, seed=seed * 2 + 2)  # fakes judged by D_Y

    def __call__(self, real_x, real_y):
        weights = self.loss_weights
        discriminator_x, discriminator_y = self.nets["discriminator_X"], self.nets["discriminator_Y"]
        with frozen(discriminator_x, discriminator_y), self.autocast():
            self._zero("generator_X")
            self._zero("generator_Y")
            fake_y, rec_x, fake_x, rec_y = self.cycle(real_x, real_y)
            gx_gan = weights.adversarial * lsgan_loss(discriminator_x(fake_y), real=True)
            gx_cyc = weights.cycle * l1_loss(rec_x, real_x)
            gy_gan = weights.adversarial * lsgan_loss(discriminator_y(fake_x), real=True)
            gy_cyc = weights.cycle * l1_loss(rec_y, real_y)
            loss_gx, loss_gy = gx_gan + gx_cyc, gy_gan + gy_cyc
        # one backward of the sum = the reference's two backward calls before both steps
        self._backward(loss_gx + loss_gy)
        self._step("generator_X")
        self._step("generator_Y")

        with self.autocast():
            self._zero("discriminator_X")
            pred_real, pred_fake = self.discriminator_x_pair(real_y, self.pool_y.query(fake_y))
            loss_dx, _, _ = discriminator_loss(pred_real, pred_fake)
        self._backward(loss_dx)
        self._step("discriminator_X")
        with self.autocast():
            self._zero("discriminator_Y")
            pred_real, pred_fake = self.discriminator_y_pair(real_x, self.pool_x.query(fake_x))
            loss_dy, _, _ = discriminator_loss(pred_real, pred_fake)
        self._backward(loss_dy)
        self._step("discriminator_Y")
        self._finish()

        losses = {"total": loss_gx + loss_gy + loss_dx + loss_dy, "G_X": loss_gx, "G_X_gan": gx_gan,
                  "G_X_cycle": gx_cyc, "G_Y": loss_gy, "G_Y_gan": gy_gan, "G_Y_cycle": gy_cyc,
                  "D_X": loss_dx, "D_Y": loss_dy}
        visuals = _visuals(day=real_x, fake=fake_y, night=real_y, fake_day=fake_x, rec_day=rec_x)
        return {k: v.detach() for k, v in losses.items()}, visuals

    def state_dict(self) -> dict:
        return {"pool_y": self.pool_y.state_dict(), "pool_x": self.pool_x.state_dict()}

    def load_state_dict(self, state: dict, device="cpu") -> None:
        self.pool_y.load_state_dict(state["pool_y"], device)
        self.pool_x.load_state_dict(state["pool_x"], device)


STEPS = {"hedngan": HedNGanStep, "hedgan": HedGanStep, "cyclegan": CycleGanStep}
