"""YAML presets for ``dsa cirtorch-train --config FILE.yaml``: file values become parser defaults.

The file holds cirtorch's own arguments by their long flag name or argparse dest
(``loss-margin`` or ``loss_margin``; ``directory`` is the positional EXPORT_DIR) and a
``dsa:`` section with DSAConfig keys (``generator``, ``night_ratio``, ...). Because the values
are installed as defaults, anything given on the command line wins. Keys, choices and types are
checked here, since argparse checks neither ``choices`` nor booleans of defaults.

Example file::

    arch: vgg16
    loss-margin: 0.75
    dsa:
      generator: http://.../hedngan_generator_X.pth
      diverse_anchors: true
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.integrations.cirtorch.flags import CONFIG_DESTS, RUNTIME_DESTS


def pop_config_path(argv: list[str], parser: argparse.ArgumentParser) -> str | None:
    """Remove ``--config FILE`` / ``--config=FILE`` from ``argv`` (in place) and return FILE.

    Example:
        >>> import argparse
        >>> argv = ["exports", "--config=presets/dsa.yaml", "--epochs", "1"]
        >>> pop_config_path(argv, argparse.ArgumentParser()), argv
        ('presets/dsa.yaml', ['exports', '--epochs', '1'])
    """
    path = None
    i = 0
    while i < len(argv):
        item = argv[i]
        if item == "--config":
            if i + 1 >= len(argv):
                parser.error("argument --config: expected one argument")
            path = argv[i + 1]
            del argv[i : i + 2]
        elif item.startswith("--config="):
            path = item.split("=", 1)[1]
            del argv[i]
        else:
            i += 1
    return path


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """argparse dest -> action (help and --config itself excluded)."""
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}


def load_yaml(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        parser.error(f"--config: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        parser.error(f"--config: {path} is not valid YAML: {err}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        parser.error(f"--config: {path} must hold a mapping of argument names to values, got {type(data).__name__}")
    return data


def yaml_to_dests(data: dict[str, Any], parser: argparse.ArgumentParser, source: str) -> dict[str, Any]:
    """Map the file's keys to parser dests, checking names, choices and types."""
    actions = _actions(parser)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "dsa":
            if not isinstance(value, dict):
                parser.error(f"--config: {source}: 'dsa' must be a mapping of DSA settings")
            unknown = sorted(set(value) - set(DSAConfig.keys()) - {k[4:] for k in RUNTIME_DESTS})
            if unknown:
                parser.error(f"--config: {source}: unknown key(s) {unknown} in 'dsa'; valid keys: "
                             f"{DSAConfig.keys() + [k[4:] for k in RUNTIME_DESTS]}")
            for name, v in value.items():
                dest = CONFIG_DESTS.get(name, f"dsa_{name}")
                out[dest] = _checked(actions[dest], v, f"dsa.{name}", parser, source)
            continue
        dest = str(key).replace("-", "_")
        if dest not in actions:
            valid = sorted(d for d in actions if not d.startswith("dsa_"))
            parser.error(f"--config: {source}: unknown key {key!r}; valid keys: {valid} and a 'dsa:' section")
        out[dest] = _checked(actions[dest], value, str(key), parser, source)
    return out


def _checked(action: argparse.Action, value: Any, key: str, parser: argparse.ArgumentParser, source: str) -> Any:
    where = f"--config: {source}: {key}"
    if action.nargs == 0:  # store_true / store_false flags
        if not isinstance(value, bool):
            parser.error(f"{where} must be true or false, got {value!r}")
        # `--not-pretrained` stores False into `pretrained`: the YAML value is the dest's value.
        return value
    if value is None:
        return None
    if action.type is int and isinstance(value, float):
        parser.error(f"{where} must be an integer, got {value!r}")
    if action.type is not None and not isinstance(value, bool):
        try:
            value = action.type(value) if isinstance(value, str) or action.type in (int, float) else value
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            parser.error(f"{where}: invalid value {value!r}: {err}")
    elif isinstance(value, bool):
        parser.error(f"{where}: expected a value, got {value!r}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{where}: invalid choice {value!r} (choose from {', '.join(map(str, action.choices))})")
    return value


def apply_yaml_defaults(parser: argparse.ArgumentParser, path: str | os.PathLike) -> dict[str, Any]:
    """Install the file's values as parser defaults (the command line still overrides them)."""
    values = yaml_to_dests(load_yaml(path, parser), parser, str(path))
    for action in parser._actions:
        # A positional given in the file (EXPORT_DIR) becomes optional on the command line.
        if not action.option_strings and action.dest in values:
            action.nargs = "?"
            action.required = False
    parser.set_defaults(**values)
    return values
