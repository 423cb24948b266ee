"""torchvision ``Compose`` helpers: the one rule for finding its normalisation and for putting CLAHE in front.

Used by the tuple loader, the cirtorch and the HOW integrations.
"""

from __future__ import annotations

from typing import Any

from dsa_plugin.transforms.clahe_ops import CLAHETransform
from dsa_plugin.transforms.meanstd import MeanStd


def compose_steps(transform: Any) -> list:
    """The steps of a ``Compose`` (anything with a ``transforms`` list), else ``[transform]``.

    Example:
        >>> from torchvision import transforms as T
        >>> [type(s).__name__ for s in compose_steps(T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]))]
        ['ToTensor', 'Normalize']
    """
    steps = getattr(transform, "transforms", None)
    return list(steps) if isinstance(steps, (list, tuple)) else [transform]


def find_normalize(transform: Any) -> MeanStd | None:
    """``(mean, std)`` as floats of the first step of ``transform`` that has ``mean`` and ``std``
    (torchvision's ``Normalize``), or ``None`` when there is none: each caller decides what that means
    (the cirtorch integration falls back to ImageNet's, HOW's refuses).

    Example:
        >>> import torchvision.transforms as T
        >>> find_normalize(T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])).std
        (0.25, 0.25, 0.25)
        >>> find_normalize(T.ToTensor()) is None
        True
    """
    for step in compose_steps(transform):
        if hasattr(step, "mean") and hasattr(step, "std"):
            return MeanStd(tuple(float(v) for v in step.mean), tuple(float(v) for v in step.std))
    return None


def with_clahe(transform: Any, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = 8):
    """``transform`` with CLAHE in front, as a torchvision ``Compose``.

    A leading ``ToTensor`` is replaced by ``CLAHETransform(as_tensor=True)``: CLAHE's float result
    goes straight on, without uint8 rounding, as the reference's ``pil2np | apply_clahe | totensor``
    and the training loader do. Any other transform gets the CLAHE'd PIL image.

    Example:
        >>> import torchvision.transforms as T
        >>> with_clahe(T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])).transforms[0]
        CLAHETransform(clip_limit=1.0, grid_size=(8, 8), as_tensor=True)
    """
    import torchvision.transforms as T

    steps = compose_steps(transform)
    as_tensor = bool(steps) and isinstance(steps[0], T.ToTensor)
    first = CLAHETransform(clip_limit=clip_limit, grid_size=grid_size, as_tensor=as_tensor)
    return T.Compose([first, *(steps[1:] if as_tensor else steps)])
