"""Integrations with the retrieval toolkits (cirtorch, HOW); each imports its toolkit lazily.

Only this package touches cirtorch or HOW; the rest of ``dsa_plugin`` imports no toolkit.

- :mod:`dsa_plugin.integrations.compat`: runtime fixes for the toolkits' old code, the one
  scoped-patch helper (``rebind``/``rebound``) and ``GLOBAL_PATCHES``, the list of every
  process-wide patch.
- :mod:`dsa_plugin.integrations.cirtorch`: ``dsa cirtorch-train`` (``cli``), the hooks the patched
  cirtorch ``train.py`` calls (``hooks``), its flags and YAML presets, the night tuple loader as a
  subclass of cirtorch's ``TuplesDataset`` (``tuples``, what cirtorch's and HOW's training loops
  receive) and published DSA embeddings in cirtorch's network (``eval``).
- :mod:`dsa_plugin.integrations.how`: ``dsa how-train`` (``cli``) and the patched HOW's entry points
  (``params.validate_params``, ``runtime.install_dsa``).
"""
