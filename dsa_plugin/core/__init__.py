"""Foundations every other part of ``dsa_plugin`` builds on; nothing here imports the rest of the package.

- :mod:`~dsa_plugin.core.files`: atomic writes (``atomic_write``, ``atomic_save``), ``to_plain``, JSON.
- :mod:`~dsa_plugin.core.images`: image loading as cirtorch loads images, with clear errors.
- :mod:`~dsa_plugin.core.batching`: grouping equal-size images into batches.
- :mod:`~dsa_plugin.core.descriptors`: descriptor orientation (D x N columns) and dimensions.
- :mod:`~dsa_plugin.core.config`: ``DSAConfig`` (the DSA settings) and value checks.
- :mod:`~dsa_plugin.core.devices`: device checks.
- :mod:`~dsa_plugin.core.distributed`: ``DistContext`` (torchrun ranks, barriers).
- :mod:`~dsa_plugin.core.safe_pickle`: the restricted unpickler for data pickles.
"""
