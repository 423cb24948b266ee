"""Generator warm-up: fit a generator to a simple mapping before adversarial training.

Not part of the reference, whose GANs start from random weights and train for 50-100 epochs
(docs/reference.md §gan-variants); ``train.identity_warmup: 0``, the default, is the reference.
It exists for CPU-sized runs: after a few hundred adversarial iterations a generator that started
from random weights still draws noise or blobs over real photos (measured on the AMOS webcam
photos, docs/demo.md), so no outline of the place survives into the synthetic night. Started from
a mapping that keeps the place's structure, the same iterations go into darkening and relighting
a picture that already has it, which is what the edge-consistency loss asks for.

Two targets (``train.warmup_target``): ``identity`` fits ``G(x) = x``; ``night-colours`` fits the
day→night generator to the day crop re-graded to the night photos' colours
(:mod:`dsa_plugin.gan.quantile_match`).

Example:
    >>> import torch
    >>> from dsa_plugin.models import ResnetGenerator
    >>> _ = torch.manual_seed(0)
    >>> g = ResnetGenerator(ngf=4, n_blocks=1)
    >>> x = torch.rand(4, 3, 16, 16) * 2 - 1
    >>> losses = warmup_fit(g, [(x, x)] * 30, lr=1e-2)
    >>> len(losses), losses[-1] < losses[0]
    (30, True)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

#: Values of ``train.warmup_target``.
WARMUP_TARGETS = ("identity", "night-colours")


def warmup_fit(generator: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], lr: float,
               betas: tuple[float, float] = (0.5, 0.999)) -> list[float]:
    """One Adam step of the L1 loss ``|G(x) - y|`` per ``(x, y)`` batch; returns every step's loss.

    Args:
        generator: the network to fit, in training mode (its BatchNorm statistics follow the data).
        batches: ``(x, y)`` pairs of ``B x 3 x H x W`` tensors in the generator's range (here
            [-1, 1]) on its device; with a tanh output any target in that range is reachable.
        lr, betas: Adam settings (a fresh optimizer: the GAN's own starts afterwards, as without
            a warm-up).

    Returns:
        The per-step losses, in order (floats).
    """
    optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    losses = []
    generator.train()
    for x, y in batches:
        loss = (generator(x).float() - y.float()).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
