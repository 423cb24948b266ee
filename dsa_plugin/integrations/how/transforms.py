"""HOW's image transform with CLAHE in front, and the way back to HOW's own transform."""

from __future__ import annotations

from typing import Any, Callable


class ClaheCompose:
    """HOW's transform with CLAHE in front; ``plain`` keeps HOW's transform for the night dataset.

    When HOW's transform starts with ``ToTensor`` (it does: ToTensor + Normalize), CLAHE's float
    result replaces ``ToTensor`` (no uint8 rounding, as the reference's ``pil2np | apply_clahe |
    totensor``). The night dataset applies CLAHE itself, after translating an anchor, so it gets
    ``plain``.
    """

    def __init__(self, plain: Callable, clip_limit: float = 1.0, grid_size: tuple[int, int] | int = 8):
        from dsa_plugin.transforms import with_clahe

        self.plain = plain
        first, *self.rest = with_clahe(plain, clip_limit=clip_limit, grid_size=grid_size).transforms
        self.clahe = first

    def __call__(self, img):
        x = self.clahe(img)
        for step in self.rest:
            x = step(x)
        return x

    def __repr__(self) -> str:
        inner = "\n".join(f"    {t!r}" for t in [self.clahe, *self.rest])
        return f"ClaheCompose(\n{inner}\n)"


def build_transform(how_net, runtime: dict[str, Any], clahe: bool, grid: int = 8) -> Callable:
    """HOW's ``build_transforms(runtime)``, with CLAHE (``grid`` x ``grid`` tiles) in front when ``clahe``."""
    plain = how_net.build_transforms(runtime)
    return ClaheCompose(plain, grid_size=grid) if clahe else plain


def plain_transform(transform: Callable | None) -> Callable | None:
    """HOW's own transform inside our wrappers (the night dataset recognises ToTensor + Normalize)."""
    from dsa_plugin.integrations.compat import WithRuntimeFixes

    while isinstance(transform, (WithRuntimeFixes, ClaheCompose)):
        transform = transform.fn if isinstance(transform, WithRuntimeFixes) else transform.plain
    return transform


def mean_std_of(transform) -> list[list[float]]:
    """``[mean, std]`` of the ``Normalize`` in HOW's transform (inside our wrappers)."""
    from dsa_plugin.integrations.how.locate import HOWIntegrationError
    from dsa_plugin.transforms import find_normalize

    found = find_normalize(plain_transform(transform))
    if found is not None:
        return [list(found.mean), list(found.std)]
    raise HOWIntegrationError(f"cannot find Normalize(mean, std) in HOW's transform {transform!r}")


def transform_builder(build: Callable, clahe: bool, grid: int = 8) -> Callable:
    """HOW's ``build_transforms`` (+ CLAHE), wrapped so that spawned DataLoader workers get the fixes."""
    import functools

    from dsa_plugin.integrations.compat import WithRuntimeFixes

    @functools.wraps(build)
    def build_transforms(runtime):
        transform = build(runtime)
        return WithRuntimeFixes(ClaheCompose(transform, grid_size=grid) if clahe else transform)

    return build_transforms
