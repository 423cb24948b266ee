"""Integrations with the retrieval toolkits (cirtorch, HOW); each imports its toolkit lazily.

Only this package touches cirtorch or HOW; the rest of ``dsa_plugin`` imports no toolkit.

- :mod:`dsa_plugin.integrations.compat`: runtime fixes for the toolkits' old code, the one
  scoped-patch helper (``rebind``/``rebound``) and ``GLOBAL_PATCHES``, the list of every
  process-wide patch.
- :mod:`dsa_plugin.integrations.cirtorch`: ``dsa cirtorch-train`` and the hooks the patched
  cirtorch ``train.py`` calls (flags in ``cirtorch_flags``, YAML presets in ``cirtorch_config``).
- :mod:`dsa_plugin.integrations.cirtorch.tuples`: the night tuple loader as a subclass of
  cirtorch's ``TuplesDataset`` (what cirtorch's and HOW's training loops receive).
- :mod:`dsa_plugin.integrations.cirtorch.eval`: published DSA embeddings in cirtorch's network.
- :mod:`dsa_plugin.integrations.how`: ``dsa how-train`` and the patched HOW's entry points,
  re-exported from ``how_locate``, ``how_params``, ``how_transforms``, ``how_tuples``,
  ``how_checkpoints``, ``how_runtime`` and ``how_cli``.
"""
