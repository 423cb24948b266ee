"""Tuple training with Dark Side Augmentation: the synthetic-night tuple dataset and its epoch mining.

- :mod:`~dsa_plugin.training.tuples`: :class:`~dsa_plugin.training.tuples.NightTuplesDataset`
  (cirtorch's ``TuplesDataset`` contract: construction, night/CLAHE images, ``__getitem__``).
- :mod:`~dsa_plugin.training.epoch`: :class:`~dsa_plugin.training.epoch.EpochMining`
  (``create_epoch_tuples``: anchors, descriptor extraction, hard negatives).
- :mod:`~dsa_plugin.training.labels`: the labels the md5 night rule sees.
"""
