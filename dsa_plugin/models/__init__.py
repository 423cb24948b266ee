"""Networks of Dark Side Augmentation with state dicts compatible with the published checkpoints."""
from .discriminator import NLayerDiscriminator
from .gem import GeM, GeMNet, embed, gem_resnet101, gem_small, gem_vgg16
from .generator import NORMS, ResnetBlock, ResnetGenerator, build_generator, generator_output_size
from .hed import HED, HED_BGR_MEAN, HEDPreprocess, hed_preprocess
from .init import INIT_TYPES, init_weights

__all__ = ["ResnetGenerator", "ResnetBlock", "build_generator", "generator_output_size", "NORMS",
           "NLayerDiscriminator", "HED", "HEDPreprocess", "hed_preprocess", "HED_BGR_MEAN",
           "init_weights", "INIT_TYPES",
           "GeM", "GeMNet", "gem_small", "gem_vgg16", "gem_resnet101", "embed"]
