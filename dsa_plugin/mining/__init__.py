"""Anchor and negative mining for tuple training: diverse anchors (DSA) and cirtorch's hard negatives."""

from dsa_plugin.mining.base import AnchorSampler, InvalidSelectionError, RandomAnchorSampler
from dsa_plugin.mining.diverse import DiverseAnchorSampler, band_bounds, diverse_anchors, diverse_anchors_with_scores
from dsa_plugin.mining.negatives import HardNegatives, NotEnoughClustersError, hard_negatives

__all__ = [
    "AnchorSampler",
    "DiverseAnchorSampler",
    "HardNegatives",
    "InvalidSelectionError",
    "NotEnoughClustersError",
    "RandomAnchorSampler",
    "band_bounds",
    "diverse_anchors",
    "diverse_anchors_with_scores",
    "hard_negatives",
]
