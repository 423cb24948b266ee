"""The frozen day->night generator as a batched, on-device translator.

Reference behaviour: docs/reference.md §generator, §finetuning, §generator-output.

The generator sees images normalised with mean = std = 0.5 (the GAN's data convention) and
returns tanh output in [-1, 1]; we map it back to [0, 1]. Its output is 4*ceil(H/4) x 4*ceil(W/4)
for an H x W input (two stride-2 convs, two transposed convs); like the reference we keep that
size, neither padding nor cropping. The generator is frozen and always in eval mode, so its
BatchNorm uses running statistics, as the reference's ``frozen: true`` network does.

Example:
    >>> import torch
    >>> from dsa_plugin.models import ResnetGenerator
    >>> t = NightTranslator(ResnetGenerator(ngf=4, n_blocks=1))
    >>> t.translate(torch.rand(2, 3, 30, 41)).shape
    torch.Size([2, 3, 32, 44])
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dsa_plugin.core.batching import batches_by_size
from dsa_plugin.models.generator import generator_output_size


class TranslatorError(ValueError):
    """The generator or the input does not fit the translator (wrong architecture, shape, range)."""


def output_size(height: int, width: int) -> tuple[int, int]:
    """Size of the generator's output for an ``height x width`` input: ``(4*ceil(H/4), 4*ceil(W/4))``.

    Example:
        >>> output_size(272, 362)
        (272, 364)
    """
    return generator_output_size(height, width)


def translate(generator: nn.Module, x01: Tensor) -> Tensor:
    """Run ``generator`` on a [0, 1] RGB batch and return its night version in [0, 1].

    Args:
        generator: a day->night ResnetGenerator expecting 0.5/0.5-normalised input, tanh output.
        x01: ``B x 3 x H x W`` float in [0, 1], on the generator's device.

    Returns:
        ``B x 3 x 4*ceil(H/4) x 4*ceil(W/4)`` float32 in [0, 1]. No gradient is recorded.
    """
    with torch.no_grad():
        y = generator(x01 * 2.0 - 1.0)
    return (y.float() * 0.5 + 0.5).clamp_(0.0, 1.0)


def _fingerprint(generator: nn.Module) -> str:
    from dsa_plugin.models.checkpoint_files import state_dict_sha256

    return state_dict_sha256(generator.state_dict())


class NightTranslator(nn.Module):
    """A frozen generator that turns [0, 1] RGB batches into night on ``device``, optionally under AMP.

    Args:
        generator: the day->night generator (e.g. ``dsa_plugin.models.checkpoints.load_generator(...)``).
        device: where it runs (``None``: where its parameters already are).
        amp: run under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU); the output is float32.

    ``train()`` never takes the generator out of eval mode, so nesting the translator in a module
    that is switched to training keeps the BatchNorm running statistics in use.
    """

    def __init__(self, generator: nn.Module, device: str | torch.device | None = None, amp: bool = False) -> None:
        super().__init__()
        if not isinstance(generator, nn.Module):
            raise TranslatorError(f"NightTranslator needs a generator nn.Module, got {type(generator).__name__}")
        meta = getattr(generator, "meta", None)
        if isinstance(meta, dict) and (meta.get("in_channels", 3), meta.get("out_channels", 3)) != (3, 3):
            raise TranslatorError(
                f"the night generator must map RGB to RGB (3 -> 3 channels), got "
                f"{meta.get('in_channels')} -> {meta.get('out_channels')}"
            )
        bad = [name for name, t in [*generator.named_parameters(), *generator.named_buffers()]
               if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            # A NaN weight turns every night image into NaN (black after clamping): refuse it.
            raise TranslatorError(f"the generator has non-finite (NaN/inf) values in {len(bad)} tensor(s), "
                                  f"first {bad[0]!r}; the checkpoint is corrupt or training diverged")
        if device is None:
            first = next(generator.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.generator = generator.to(self.device).eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self._fingerprint: str | None = None

    @classmethod
    def from_checkpoint(
        cls, path_or_url: str | os.PathLike, device: str | torch.device = "cpu", amp: bool = False
    ) -> "NightTranslator":
        """Load a generator checkpoint (reference 4-key file, raw state dict, path or URL).

        Raises ``TranslatorError`` naming the file when it is not a day->night ResnetGenerator.
        """
        from dsa_plugin.models.checkpoint_files import CheckpointError
        from dsa_plugin.models.checkpoints import load_generator

        try:
            generator = load_generator(path_or_url, device=device)
        except (CheckpointError, AttributeError, TypeError, KeyError, ValueError, RuntimeError) as err:
            # Not only CheckpointError: a file of the right layout with wrong contents (network_params
            # not a dict, odd shapes) fails inside the loader with whatever Python raises there.
            detail = " ".join(str(err).split())
            raise TranslatorError(
                f"cannot use {os.fspath(path_or_url)!r} as the day->night generator: "
                f"{type(err).__name__ + ': ' if not isinstance(err, CheckpointError) else ''}{detail}"
            ) from None
        return cls(generator, device=device, amp=amp)

    def train(self, mode: bool = True) -> "NightTranslator":
        # Frozen: the generator keeps BatchNorm running statistics whatever the parent does.
        super().train(mode)
        self.generator.eval()
        return self

    @property
    def fingerprint(self) -> str:
        """sha256 of the generator's weights (``checkpoints.state_dict_sha256``); keys a night cache."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.generator)
        return self._fingerprint

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def translate(self, x01: Tensor) -> Tensor:
        """``B x 3 x H x W`` (or ``3 x H x W``) in [0, 1] -> night, ``B x 3 x 4ceil(H/4) x 4ceil(W/4)`` in [0, 1].

        The result stays on the translator's device (the input is moved there if needed).
        """
        if not isinstance(x01, Tensor):
            raise TranslatorError(f"translate expects a tensor, got {type(x01).__name__}")
        squeeze = x01.dim() == 3
        x = x01.unsqueeze(0) if squeeze else x01
        if x.dim() != 4 or x.shape[1] != 3:
            raise TranslatorError(f"translate expects B x 3 x H x W or 3 x H x W RGB, got shape {tuple(x01.shape)}")
        if not x.is_floating_point():
            raise TranslatorError(f"translate expects float values in [0, 1], got dtype {x.dtype}")
        x = x.to(self.device, torch.float32, non_blocking=True)
        with self._autocast():
            y = translate(self.generator, x)
        if y.shape[:2] != (x.shape[0], 3):
            raise TranslatorError(
                f"generator returned shape {tuple(y.shape)} for input {tuple(x.shape)}; expected 3 channels"
            )
        return y[0] if squeeze else y

    forward = translate

    def translate_many(self, images: Sequence[Tensor], batch_size: int = 8) -> list[Tensor]:
        """Translate ``3 x H x W`` images of mixed sizes, batching those of equal size; order is kept."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for i, img in enumerate(images):
            if img.dim() != 3:
                raise TranslatorError(
                    f"translate_many expects 3 x H x W images, image {i} has shape {tuple(img.shape)}"
                )
        out: list[Tensor | None] = [None] * len(images)
        for chunk, group in batches_by_size(enumerate(images), batch_size):
            y = self.translate(torch.stack(group))
            for i, yi in zip(chunk, y):
                out[i] = yi
        return out  # type: ignore[return-value]

    def translate_pil(self, img):
        """Translate one PIL image; returns a PIL RGB image of size 4ceil(W/4) x 4ceil(H/4)."""
        from PIL import Image

        from dsa_plugin.core.images import pil_to_tensor01, tensor01_to_pil, to_rgb

        if not isinstance(img, Image.Image):
            raise TranslatorError(f"translate_pil expects a PIL image, got {type(img).__name__}")
        return tensor01_to_pil(self.translate(pil_to_tensor01(to_rgb(img)).unsqueeze(0))[0])

    def to_network_input(
        self,
        x01: Tensor,
        clahe: bool = True,
        mean_std=None,
        clip_limit: float = 1.0,
        grid_size: tuple[int, int] = (8, 8),
    ) -> Tensor:
        """G -> CLAHE -> mean/std normalisation, all on the device.

        The reference's augment wrappers, docs/reference.md §generator-output.

        ``mean_std`` defaults to ImageNet's (the embedding networks' convention).
        """
        from dsa_plugin import transforms

        y = self.translate(x01)
        if clahe:
            y = transforms.clahe(
                y if y.dim() == 4 else y.unsqueeze(0), clip_limit=clip_limit, grid_size=grid_size, check_range=False
            )
            y = y if x01.dim() == 4 else y[0]
        return transforms.normalize(y, transforms.IMAGENET_MEAN_STD if mean_std is None else mean_std)

    def __repr__(self) -> str:
        g = self.generator
        blocks = sum(1 for m in g.modules() if type(m).__name__ == "ResnetBlock")
        return (f"NightTranslator({type(g).__name__}({blocks} blocks, {getattr(g, 'norm', '?')} norm), "
                f"device={self.device}, amp={self.amp})")
