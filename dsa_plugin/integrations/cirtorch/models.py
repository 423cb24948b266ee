"""cirtorch's own network and loss classes around the plugin's GeM networks (the demo's
``--backend cirtorch``): the only place outside the tuple loader where the plugin builds cirtorch
objects, so that the core and the demo import no toolkit.

Example::

    >>> from dsa_plugin.models import gem_small                                      # doctest: +SKIP
    >>> net = as_cirtorch_network(gem_small(outputdim=8))                            # doctest: +SKIP
    >>> type(net).__name__, type(contrastive_loss(0.7)).__name__                     # doctest: +SKIP
    ('ImageRetrievalNet', 'ContrastiveLoss')
"""

from __future__ import annotations

from torch import nn


def check_importable() -> None:
    """Raise ``ImportError`` unless the cirtorch modules these builders use import."""
    import cirtorch.layers.loss  # noqa: F401
    import cirtorch.layers.pooling  # noqa: F401
    import cirtorch.networks.imageretrievalnet  # noqa: F401


def as_cirtorch_network(net: nn.Module) -> nn.Module:
    """cirtorch's ``ImageRetrievalNet`` (GeM, no whitening) over ``net.features``, with ``net.meta``.

    The very same ``features`` module is kept (not copied), so a memoised trunk stays in use and
    the state-dict keys are cirtorch's (``features.<i>.*``, ``pool.p``).
    """
    from cirtorch.layers.pooling import GeM
    from cirtorch.networks.imageretrievalnet import ImageRetrievalNet

    wrapped = ImageRetrievalNet(list(net.features.children()), None, GeM(), None, dict(net.meta))
    wrapped.features = net.features
    return wrapped


def contrastive_loss(margin: float) -> nn.Module:
    """cirtorch's ``ContrastiveLoss`` with ``margin``."""
    from cirtorch.layers.loss import ContrastiveLoss

    return ContrastiveLoss(margin=margin)
