"""HOW integration: a ``dsa:`` section in HOW's YAML parameter files and ``dsa how-train``.

``dsa how-train <params.yml> [HOW's train options]`` runs HOW's own ``examples/demo_how.py``
train stage (its argument parsing, its ``__template__`` parameter loading, its training loop and
checkpoints) with three changes when the parameters hold a ``dsa:`` section:

- the training tuples come from :class:`dsa_plugin.tuples.NightTuplesDataset` (night anchors,
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

This module is the public face of the integration; each concern lives in its own module and
every name is re-exported here:

=================================================  ==============================================
:mod:`~dsa_plugin.integrations.how_locate`         finding a HOW clone, importing HOW and its demo
:mod:`~dsa_plugin.integrations.how_params`         the ``dsa:`` section, ``__template__`` lookup,
                                                   pre-flight checks (generator, data pickles)
:mod:`~dsa_plugin.integrations.how_transforms`     CLAHE in front of HOW's transform
:mod:`~dsa_plugin.integrations.how_tuples`         the night tuple factory and ``dsa_stats.json``
:mod:`~dsa_plugin.integrations.how_checkpoints`    ``weights_only`` loading of HOW checkpoints
:mod:`~dsa_plugin.integrations.how_runtime`        the scoped run-time changes (:func:`how_runtime`)
                                                   and the patch's :func:`install_dsa`
:mod:`~dsa_plugin.integrations.how_cli`            ``dsa how-train`` (:func:`main`)
=================================================  ==============================================
"""

from __future__ import annotations

import sys

from dsa_plugin.integrations.compat import rebound as _patched
from dsa_plugin.integrations.how_checkpoints import (
    _defaultdict_as_dict,
    allow_how_checkpoints,
    how_checkpoint_loading,
    how_checkpoint_safe_globals,
    load_how_checkpoint,
)
from dsa_plugin.integrations.how_cli import HOW_TRAIN_OPTIONS, _cuda_available, _parser, main
from dsa_plugin.integrations.how_locate import (
    HOW_SRC_ENV,
    HOWIntegrationError,
    _require,
    import_how,
    load_demo,
    locate_how,
)
from dsa_plugin.integrations.how_params import (
    DSA_SECTION,
    HOW_PARAMS_DIR,
    check_data_pickles,
    check_generator,
    dsa_config_from_params,
    resolve_params_path,
    template_fallback,
    validate_params,
)
from dsa_plugin.integrations.how_params import data_folder as _data_folder
from dsa_plugin.integrations.how_params import load_params as _load_params
from dsa_plugin.integrations.how_runtime import (
    _DeferredFactory,
    _grid_accepting_b,
    _train_without_dsa_kwarg,
    accept_grid_b,
    apply_runtime_fixes,
    fixed_initialize_loss,
    how_runtime,
    install_dsa,
)
from dsa_plugin.integrations.how_transforms import ClaheCompose, build_transform, plain_transform
from dsa_plugin.integrations.how_transforms import mean_std_of as _mean_std_of
from dsa_plugin.integrations.how_transforms import transform_builder as _transform_builder
from dsa_plugin.integrations.how_tuples import (
    STATS_FILE,
    EpochReporter,
    NightTuplesFactory,
    check_device,
    dataset_stats,
    night_images_served,
)

__all__ = [
    "DSA_SECTION", "HOW_PARAMS_DIR", "HOW_SRC_ENV", "HOW_TRAIN_OPTIONS", "STATS_FILE",
    "ClaheCompose", "EpochReporter", "HOWIntegrationError", "NightTuplesFactory",
    "accept_grid_b", "allow_how_checkpoints", "apply_runtime_fixes", "build_transform", "check_data_pickles",
    "check_device", "check_generator", "dataset_stats", "dsa_config_from_params", "fixed_initialize_loss",
    "how_checkpoint_loading", "how_checkpoint_safe_globals", "how_runtime", "import_how", "install_dsa",
    "load_demo", "load_how_checkpoint", "locate_how", "main", "night_images_served", "plain_transform",
    "resolve_params_path", "template_fallback", "validate_params",
]

# Names that were module-private before the split; kept importable for callers that used them.
_PRIVATE_COMPAT = (_DeferredFactory, _cuda_available, _data_folder, _defaultdict_as_dict, _grid_accepting_b,
                   _load_params, _mean_std_of, _parser, _patched, _require, _train_without_dsa_kwarg,
                   _transform_builder)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
