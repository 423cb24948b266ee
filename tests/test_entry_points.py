"""Every ``python -m`` entry point and benchmark script reaches its argument parser.

The ``if __name__ == "__main__"`` blocks are what users run (``python -m dsa_plugin.gan.cli``,
``python benchmarks/gan_quality.py``) and what no other test imports that way: a renamed ``main``
or a missing ``sys.exit`` there goes unnoticed until someone types the command.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["dsa_plugin", "dsa_plugin.cli", "dsa_plugin.evaluation.cli", "dsa_plugin.gan.cli", "dsa_plugin.night.cli",
           "dsa_plugin.models.cli", "dsa_plugin.integrations.how.cli", "dsa_plugin.integrations.cirtorch.cli"]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if "__main__" in p.read_text())


def _help(monkeypatch, capsys, run) -> str:
    monkeypatch.setattr(sys, "argv", ["prog", "--help"])
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_main_block_is_listed():
    found = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__main__")
             for p in (ROOT / "dsa_plugin").rglob("*.py") if 'if __name__ == "__main__":' in p.read_text()}
    # the demo pipeline's mention is a docstring about multiprocessing, not an entry point
    assert found - {"dsa_plugin.demo.pipeline"} == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.filterwarnings("ignore:'dsa_plugin:RuntimeWarning")  # runpy: the module was imported by its package
def test_module_help(module, monkeypatch, capsys):
    out = _help(monkeypatch, capsys, lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))
    assert out.startswith("usage:")


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help(script):
    # a subprocess: some scripts re-exec themselves with OpenMP settings before parsing
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
