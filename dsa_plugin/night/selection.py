"""Which images become synthetic night: the reference's deterministic md5 rule (docs/reference.md §md5-selection).

An image is translated iff its label starts with the prefix (``"anc"``: training anchors, and the
mining labels ``"anc-mine"`` / ``"anc-pool-mine"``) and the last four hex digits of md5(name),
read as an integer and divided by 16**4, are below the ratio. ``name`` is the file's basename
without extension, i.e. the retrieval-SfM cid. The rule depends on nothing but the name, so the
same images are night in every epoch, in mining and in training.

Example:
    >>> is_night("015bb8aa57c3fbebc41daca6a093f639", "anc")
    True
    >>> is_night("015bb8aa57c3fbebc41daca6a093f639", "pos")
    False
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

#: Defaults of the paper (``cir_ratio_pass_through:0.25:anc``).
DEFAULT_RATIO = 0.25
DEFAULT_PREFIX = "anc"


def image_name(path: str | os.PathLike) -> str:
    """The key of the rule: the basename of ``path`` without its extension (the SfM cid).

    >>> image_name("ims/39/f6/93/015bb8aa57c3fbebc41daca6a093f639")
    '015bb8aa57c3fbebc41daca6a093f639'
    >>> image_name("/data/night/0001.jpg")
    '0001'
    """
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def night_score(name: str) -> float:
    """``int(md5(name)[-4:], 16) / 16**4`` in [0, 1): the image is night iff this is below the ratio.

    Example:
        >>> night_score("015bb8aa57c3fbebc41daca6a093f639")  # below 0.25: night at the paper's ratio
        0.1707916259765625
    """
    if not isinstance(name, str):
        raise TypeError(f"night_score expects an image name (str), got {type(name).__name__}: {name!r}")
    return int(hashlib.md5(name.encode("utf-8")).hexdigest()[-4:], 16) / 16**4


def _check(ratio: float, prefix: str) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"night ratio must be in [0, 1], got {ratio}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"night label prefix must be a non-empty string such as 'anc', got {prefix!r}")


def is_night(name: str, label: str, ratio: float = DEFAULT_RATIO, prefix: str = DEFAULT_PREFIX) -> bool:
    """True iff ``label`` starts with ``prefix`` and ``night_score(name) < ratio``.

    The reference tests the label with ``re.match(prefix, label)``; for a plain-text prefix such
    as ``"anc"`` that is exactly ``label.startswith(prefix)``, which is what we use (no regex
    surprises for prefixes containing ``.`` or ``+``).

    Example:
        >>> is_night("015bb8aa57c3fbebc41daca6a093f639", "anc"), is_night("015bb8aa57c3fbebc41daca6a093f639", "neg")
        (True, False)
    """
    _check(ratio, prefix)
    return label.startswith(prefix) and night_score(name) < ratio


def select_night(
    names: Sequence[str],
    labels: str | Sequence[str],
    ratio: float = DEFAULT_RATIO,
    prefix: str = DEFAULT_PREFIX,
) -> list[bool]:
    """``is_night`` for many images; ``labels`` is one label for all or one per name.

    >>> select_night(["015bb8aa57c3fbebc41daca6a093f639", "3fb7b4f3c9560312f1e36f00a7abb38a"], "anc")
    [True, False]
    """
    _check(ratio, prefix)
    if isinstance(labels, str):
        labels = [labels] * len(names)
    if len(labels) != len(names):
        raise ValueError(f"select_night got {len(names)} names but {len(labels)} labels")
    return [label.startswith(prefix) and night_score(name) < ratio for name, label in zip(names, labels)]
