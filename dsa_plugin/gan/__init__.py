"""Day->night GAN training (HEDN GAN, HED GAN, CycleGAN) with the reference's step order.

Example:
    >>> from dsa_plugin.gan import load_config, train
    >>> cfg = load_config("tiny", {"data.day": "day/", "data.night": "night/"})   # doctest: +SKIP
    >>> result = train(cfg, "runs/tiny", device="cpu")                            # doctest: +SKIP
    >>> result.generator_path, result.log_path, result.sample_paths              # doctest: +SKIP
"""

from dsa_plugin.gan.config import PRESETS, GanConfig, load_config, preset
from dsa_plugin.gan.state import ResumeError
from dsa_plugin.gan.summary import TrainResult
from dsa_plugin.gan.trainer import train

__all__ = ["GanConfig", "load_config", "preset", "PRESETS", "train", "TrainResult", "ResumeError"]
