"""HOW integration: a ``dsa:`` section in HOW's YAML parameter files and ``dsa how-train``.

``dsa how-train <params.yml> [HOW's train options]`` runs HOW's own ``examples/demo_how.py``
train stage (its argument parsing, its ``__template__`` parameter loading, its training loop and
checkpoints) with three changes when the parameters hold a ``dsa:`` section:

- the training tuples come from :class:`dsa_plugin.training.tuples.NightTuplesDataset` (night anchors,
  diverse anchors) instead of cirtorch's ``TuplesDataset``;
- CLAHE is prepended to HOW's transform (``how_net.build_transforms``) when ``dsa.clahe`` is on,
  so training, PCA initialisation and validation all see CLAHE images;
- the ``dsa:`` section is validated (:meth:`DSAConfig.from_dict`) before anything is loaded.

Runtime fixes for HOW at HEAD 4d73c88 on current libraries are applied with or without a
``dsa:`` section (they do not change results): the ``initialize_loss`` NameError, matplotlib's
removed ``grid(b=)``, ``weights_only`` loading of HOW checkpoints (numpy types and HOW's
``defaultdict`` scores allow-listed, see :func:`load_how_checkpoint`), cirtorch's hard-coded
``.cuda()`` on CPU runs and cirtorch's other fixes from :mod:`dsa_plugin.integrations.compat`.
A per-run report, ``<exp>/dsa_stats.json``, records the tuples, night anchors and mining stats.

``patches/how-train.patch`` makes HOW's own ``demo_how.py`` accept the section by calling
:func:`validate_params` and :func:`install_dsa` from here.

Each concern lives in its own module; the package re-exports only the two names the patch calls:

=================================================  ==============================================
:mod:`~dsa_plugin.integrations.how.locate`         finding a HOW clone, importing HOW and its demo
:mod:`~dsa_plugin.integrations.how.params`         the ``dsa:`` section, ``__template__`` lookup,
                                                   pre-flight checks (generator, data pickles)
:mod:`~dsa_plugin.integrations.how.transforms`     CLAHE in front of HOW's transform
:mod:`~dsa_plugin.integrations.how.tuples`         the night tuple factory and ``dsa_stats.json``
:mod:`~dsa_plugin.integrations.how.checkpoints`    ``weights_only`` loading of HOW checkpoints
:mod:`~dsa_plugin.integrations.how.runtime`        the scoped run-time changes (:func:`how_runtime`)
                                                   and the patch's :func:`install_dsa`
:mod:`~dsa_plugin.integrations.how.cli`            ``dsa how-train`` (``main``)
=================================================  ==============================================
"""

from dsa_plugin.integrations.how.params import validate_params
from dsa_plugin.integrations.how.runtime import install_dsa

__all__ = ["install_dsa", "validate_params"]
