"""Dark Side Augmentation inside cnnimageretrieval-pytorch (cirtorch); cirtorch is imported lazily.

- :mod:`.cli`: ``dsa cirtorch-train`` (cirtorch's ``train.py`` run with the ``--dsa-*`` flags).
- :mod:`.hooks`: :func:`~.hooks.dsa_session` / :func:`~.hooks.install`, the names rebound in
  cirtorch's script; :mod:`.datafiles`: checks of the pickles it will read.
- :mod:`.flags` (``--dsa-*``), :mod:`.config` (YAML presets), :mod:`.tuples` (the night tuple loader
  as a subclass of cirtorch's ``TuplesDataset``), :mod:`.eval` (published DSA embeddings in
  cirtorch's network), :mod:`.models` (cirtorch's network and loss for the demo).

The three names ``patches/cirtorch-train.patch`` calls are the package's API:
``add_dsa_arguments``, ``install`` and ``export_tag``.
"""

from dsa_plugin.integrations.cirtorch.flags import add_dsa_arguments
from dsa_plugin.integrations.cirtorch.hooks import export_tag, install

__all__ = ["add_dsa_arguments", "export_tag", "install"]
