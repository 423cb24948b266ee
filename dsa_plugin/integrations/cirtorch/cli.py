"""``dsa cirtorch-train``: cirtorch's own ``examples/train.py`` with Dark Side Augmentation.

Loads cirtorch's script as a fresh module, extends its module-level parser with the ``--dsa-*``
flags (and ``--config FILE.yaml``) and runs its own ``main()`` inside
:func:`~dsa_plugin.integrations.cirtorch.hooks.dsa_session`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from dsa_plugin.integrations import compat
from dsa_plugin.integrations.cirtorch.config import apply_yaml_defaults, pop_config_path
from dsa_plugin.integrations.cirtorch.flags import add_dsa_arguments
from dsa_plugin.integrations.cirtorch.hooks import DSARun, dsa_session

__all__ = ["CirtorchNotFoundError", "build_parser", "cirtorch_train_script", "load_train_module", "main",
           "run_training"]

PROG = "dsa cirtorch-train"


class CirtorchNotFoundError(ImportError):
    """cirtorch is not importable (clone it and ``pip install --no-deps -e <clone>``)."""


def cirtorch_train_script() -> Path:
    """Path of the installed cirtorch's ``cirtorch/examples/train.py``."""
    spec = importlib.util.find_spec("cirtorch")
    if spec is None or not spec.submodule_search_locations:
        raise CirtorchNotFoundError(
            "cirtorch is not installed: git clone https://github.com/filipradenovic/cnnimageretrieval-pytorch "
            "and `pip install --no-deps -e <clone>` (its setup.py pins torch<1.4, hence --no-deps)"
        )
    script = Path(next(iter(spec.submodule_search_locations))) / "examples" / "train.py"
    if not script.is_file():
        raise CirtorchNotFoundError(f"cirtorch is installed but {script} is missing")
    return script


def load_train_module() -> ModuleType:
    """A fresh module object executing cirtorch's ``examples/train.py`` (its ``main`` is not run).

    Fresh on every call: the script keeps state in module globals (``args``, ``min_loss``)
    and its parser would refuse the ``--dsa-*`` flags a second time.
    """
    script = cirtorch_train_script()
    compat.apply_runtime_fixes()
    spec = importlib.util.spec_from_file_location("dsa_cirtorch_train", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_parser(module: ModuleType) -> argparse.ArgumentParser:
    """cirtorch's own parser with the ``--dsa-*`` flags and ``--config``."""
    parser = module.parser
    parser.prog = PROG
    add_dsa_arguments(parser)
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="YAML file with cirtorch arguments and a `dsa:` section; flags override it")
    return parser


def run_training(argv: list[str]) -> DSARun:
    """Parse ``argv`` like ``dsa cirtorch-train`` and run cirtorch's ``main()``; returns the session."""
    module = load_train_module()
    parser = build_parser(module)
    config_path = pop_config_path(argv, parser)
    if config_path is not None:
        apply_yaml_defaults(parser, config_path)
    args = parser.parse_args(argv)
    args.config = config_path
    with dsa_session(vars(module), args, parser) as run:
        # main() calls parser.parse_args() on sys.argv; hand it the namespace parsed here.
        with compat.rebound(parser, "parse_args", lambda *a, **k: args):
            module.main()
        if run.config.enabled:
            print(f">> DSA: done; tuple-loader statistics: {json.dumps(run.stats())}")
    return run


def main(argv: list[str] | None = None) -> int:
    """``dsa cirtorch-train``: cirtorch's ``train.py`` main() with Dark Side Augmentation."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run_training(argv)
    except CirtorchNotFoundError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
