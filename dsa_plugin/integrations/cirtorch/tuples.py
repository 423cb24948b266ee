"""The night tuple loader as cirtorch's own ``TuplesDataset`` class: what both integrations build.

:class:`dsa_plugin.training.tuples.NightTuplesDataset` is toolkit-free (a plain torch ``Dataset`` that
honours cirtorch's ``TuplesDataset`` contract). ``NightTuplesDataset`` here adds cirtorch's
``TuplesDataset`` as a second base, so ``isinstance(ds, cirtorch.datasets.traindataset.TuplesDataset)``
holds for the datasets that cirtorch's ``train.py`` and HOW's ``train`` stage get from us, and
takes cirtorch's ``get_data_root()`` as the default data root. It keeps the name
``NightTuplesDataset`` (the name the loader prints in its epoch log and ``repr``) and never calls
cirtorch's ``TuplesDataset.__init__`` (which would read cirtorch's data root and db itself).

The class is built on first access (this module imports without cirtorch, like every module of
the package) and then cached as a module attribute, so DataLoader workers unpickle it by name.

Example::

    >>> from dsa_plugin.integrations.cirtorch.tuples import NightTuplesDataset  # doctest: +SKIP
    >>> from cirtorch.datasets.traindataset import TuplesDataset                 # doctest: +SKIP
    >>> issubclass(NightTuplesDataset, TuplesDataset)                            # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any

from dsa_plugin.training import tuples

__all__ = ["NightTuplesDataset"]  # noqa: F822 -- built on first access (module __getattr__)


def _build() -> type:
    from cirtorch.datasets.traindataset import TuplesDataset

    class NightTuplesDataset(tuples.NightTuplesDataset, TuplesDataset):  # type: ignore[misc, valid-type]
        """:class:`dsa_plugin.training.tuples.NightTuplesDataset` that is also a cirtorch ``TuplesDataset``.

        Every method is the plugin's (its class comes first in the MRO); same arguments.
        """

        @staticmethod
        def _toolkit_data_root() -> str | None:
            # Looked up at call time: --dsa-data-root rebinds it in cirtorch.utils.general.
            from cirtorch.utils import general

            return general.get_data_root()

    NightTuplesDataset.__module__ = __name__
    NightTuplesDataset.__qualname__ = "NightTuplesDataset"
    return NightTuplesDataset


def __getattr__(name: str) -> Any:
    if name == "NightTuplesDataset":
        cls = _build()
        globals()[name] = cls  # later lookups (and pickle) find this very class
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
