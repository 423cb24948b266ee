"""The demo's arms: what each fine-tuning run changes, so that the method's parts are isolated.

=================  ===========================================================  ================
arm                training                                                     tested with
=================  ===========================================================  ================
``baseline``       upstream: random anchors, no night, no CLAHE                 no CLAHE
``baseline+clahe`` CLAHE on every training image (DSA's grid), no night         CLAHE
``colours``        as ``dsa`` with the anchors re-graded to the night photos'    CLAHE
                   colours (no GAN: what the generator must beat)
``nights``         + 25 % md5-selected anchors turned night by the GAN          CLAHE
``dsa``            + diverse anchor mining (the paper's method)                 CLAHE
``oracle``         as ``dsa`` with real night photos of the same view / place   CLAHE
                   in place of the GAN's (the upper bound of the generator)
=================  ===========================================================  ================

``nights`` and ``dsa`` depend on a GAN and run once per GAN seed; the others do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsa_plugin.core.config import DSAConfig

#: Every arm, in the table's order.
ARMS = ("baseline", "baseline+clahe", "colours", "nights", "dsa", "oracle")

GAN_ARMS = ("nights", "dsa")


@dataclass(frozen=True)
class Arm:
    """One arm for one GAN seed (``gan_seed`` None: the arm uses no GAN)."""

    name: str
    config: DSAConfig
    clahe: bool  # CLAHE at test time
    gan_seed: int | None = None

    @property
    def label(self) -> str:
        """Stage and checkpoint name: ``dsa-gan0``, ``baseline``."""
        return self.name if self.gan_seed is None else f"{self.name}-gan{self.gan_seed}"


def build_arms(names: tuple[str, ...], clahe_grid: int, qpool_size: int, device: str,
               caches: dict[int, tuple[str, str]], oracle_cache: str | None,
               colour_cache: str | None = None) -> list[Arm]:
    """The arms to run: ``caches`` maps each GAN seed to its (generator, night cache); the oracle
    arm is left out when ``oracle_cache`` is None (no real nights of the training places), the
    colours arm when ``colour_cache`` is None."""
    clahe = {"clahe": True, "clahe_grid": clahe_grid, "device": device}
    arms = []
    for name in names:
        if name == "baseline":
            arms.append(Arm(name, DSAConfig(), False))
        elif name == "baseline+clahe":
            arms.append(Arm(name, DSAConfig(**clahe), True))
        elif name in GAN_ARMS:
            diverse = {"diverse_anchors": True, "qpool_size": qpool_size} if name == "dsa" else {}
            arms += [Arm(name, DSAConfig(generator=gen, night_cache=cache, **diverse, **clahe), True, seed)
                     for seed, (gen, cache) in caches.items()]
        elif name in ("oracle", "colours"):
            cache = oracle_cache if name == "oracle" else colour_cache
            if cache is not None:
                arms.append(Arm(name, DSAConfig(night_cache=cache, diverse_anchors=True, qpool_size=qpool_size,
                                                **clahe), True))
        else:
            raise ValueError(f"unknown arm {name!r}; allowed: {', '.join(ARMS)}")
    return arms
