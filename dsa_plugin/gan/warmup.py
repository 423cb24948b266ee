"""Identity warm-up: fit a generator to ``G(x) = x`` before adversarial training.

Not part of the reference, whose GANs start from random weights and train for 50-100 epochs
(docs/reference.md §gan-variants); ``train.identity_warmup: 0``, the default, is the reference.
It exists for CPU-sized runs: after a few hundred adversarial iterations a generator that started
from random weights still draws noise or blobs over real photos (measured on the AMOS webcam
photos, docs/demo.md), so no outline of the place survives into the synthetic night. Started from
(close to) the identity, the same iterations go into darkening and relighting a picture that
already has the place's structure, which is what the edge-consistency loss asks for.

Example:
    >>> import torch
    >>> from dsa_plugin.models import ResnetGenerator
    >>> _ = torch.manual_seed(0)
    >>> g = ResnetGenerator(ngf=4, n_blocks=1)
    >>> x = torch.rand(4, 3, 16, 16) * 2 - 1
    >>> losses = identity_warmup(g, [x] * 30, lr=1e-2)
    >>> len(losses), losses[-1] < losses[0]
    (30, True)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def identity_warmup(generator: nn.Module, batches: Iterable[Tensor], lr: float,
                    betas: tuple[float, float] = (0.5, 0.999)) -> list[float]:
    """One Adam step of the L1 loss ``|G(x) - x|`` per batch; returns the loss of every step.

    Args:
        generator: the network to fit, in training mode (its BatchNorm statistics follow the data).
        batches: ``B x 3 x H x W`` tensors in the generator's input range (here [-1, 1]) on its
            device; with a tanh output the target is reachable.
        lr, betas: Adam settings (a fresh optimizer: the GAN's own starts afterwards, as without
            a warm-up).

    Returns:
        The per-step losses, in order (floats).
    """
    optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    losses = []
    generator.train()
    for x in batches:
        loss = (generator(x).float() - x.float()).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
