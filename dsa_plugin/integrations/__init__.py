"""Integrations with the retrieval toolkits (cirtorch, HOW); each imports its toolkit lazily.

- :mod:`dsa_plugin.integrations.compat`: runtime fixes for the toolkits' old code.
- :mod:`dsa_plugin.integrations.cirtorch`: ``dsa cirtorch-train`` and the hooks the patched
  cirtorch ``train.py`` calls (flags in ``cirtorch_flags``, YAML presets in ``cirtorch_config``).
- :mod:`dsa_plugin.integrations.cirtorch_eval`: published DSA embeddings in cirtorch's network.
- :mod:`dsa_plugin.integrations.how`: ``dsa how-train``.
"""
