"""``torchrun`` support of the GAN trainer: :class:`~dsa_plugin.distributed.DistContext`.

The implementation lives in :mod:`dsa_plugin.distributed`, shared with the night-cache builder;
this module keeps the import path ``dsa_plugin.gan.distributed.DistContext`` working.
"""

from dsa_plugin.distributed import DistContext

__all__ = ["DistContext"]
