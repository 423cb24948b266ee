"""Integrations with the retrieval toolkits (cirtorch, HOW); each imports its toolkit lazily.

- :mod:`dsa_plugin.integrations.compat`: runtime fixes for the toolkits' old code.
- :mod:`dsa_plugin.integrations.cirtorch`: ``dsa cirtorch-train`` and the hooks the patched
  cirtorch ``train.py`` calls.
- :mod:`dsa_plugin.integrations.how`: ``dsa how-train``.
"""
