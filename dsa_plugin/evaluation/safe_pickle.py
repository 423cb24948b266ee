"""Kept for imports of ``dsa_plugin.evaluation.safe_pickle``: the unpickler is :mod:`dsa_plugin.safe_pickle`."""

from dsa_plugin.safe_pickle import PickleFileError, UnsafePickleError, dump_pickle, load_pickle

__all__ = ["PickleFileError", "UnsafePickleError", "dump_pickle", "load_pickle"]
