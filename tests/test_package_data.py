"""What a non-editable install ships: the configs, as package data, and a wheel that works.

``dsa_plugin/configs/`` is the installed copy of the top-level ``configs/`` (the user-facing one in
a checkout): the two must stay byte-identical. The wheel test builds the wheel from a copy of the
sources, installs it (``--no-deps``: torch and the rest come from this interpreter's site-packages)
into a fresh venv and runs ``dsa`` from a folder outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

from dsa_plugin.gan.config import PACKAGED_CONFIGS, load_config, preset

REPO = Path(__file__).resolve().parents[1]
#: configs/<file> -> the preset it spells out
GAN_PRESET_FILES = {"hedngan.yaml": "hedngan", "hedgan.yaml": "hedgan", "cyclegan.yaml": "cyclegan",
                    "hedngan-tiny.yaml": "tiny"}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_packaged_configs_are_the_top_level_configs():
    top, packaged = _files(REPO / "configs"), _files(PACKAGED_CONFIGS)
    assert sorted(top) == sorted(packaged), "copy configs/ to dsa_plugin/configs/ (the installed copy)"
    changed = [name for name in top if top[name] != packaged[name]]
    assert not changed, f"dsa_plugin/configs/ differs from configs/ in {changed}: copy configs/ over it"


@pytest.mark.parametrize("name, preset_name", sorted(GAN_PRESET_FILES.items()))
def test_gan_config_files_spell_out_their_presets(name, preset_name):
    assert load_config(PACKAGED_CONFIGS / name) == preset(preset_name)
    assert load_config(Path(name).stem) == preset(preset_name)  # by name, from the installed copy


def test_setup_py_ships_every_config():
    """Every file under dsa_plugin/configs/ matches a package_data glob of setup.py."""
    import fnmatch
    import re

    text = (REPO / "setup.py").read_text()
    globs = re.findall(r'"(configs/[^"]+)"', text)
    for name in _files(PACKAGED_CONFIGS):
        assert any(fnmatch.fnmatch(f"configs/{name}", g) for g in globs), f"configs/{name} is not in package_data"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    # 1. Build the wheel from a copy (a build in the checkout would leave build/ and *.egg-info there).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "dsa_plugin", src / "dsa_plugin", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)]
    built = _run([*wheel_cmd, "--no-build-isolation"], tmp_path, env)  # offline, with this setuptools
    if built.returncode != 0:
        built = _run(wheel_cmd, tmp_path, env)  # setuptools fetched into an isolated build env (needs PyPI)
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no setuptools, offline?): {built.stderr.strip()[-300:]}")
    (wheel,) = (tmp_path / "dist").glob("dsa_plugin-*.whl")

    # 2. A fresh venv that sees this interpreter's packages (torch is not reinstalled), not its dsa_plugin.
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip()[-300:]}")
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp_path, env).stdout.strip())
    # Plain path lines: this interpreter's site-packages come after the venv's own, and their .pth files
    # (the editable install of a checkout) are not run.
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (purelib / "zz_outer_site_packages.pth").write_text("".join(f"{p}\n" for p in ours))
    installed = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr

    # 3. Run it from a folder outside the checkout.
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import dsa_plugin; print(dsa_plugin.__file__)"], work, env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel's copy, not the checkout's
    dsa = str(bindir / "dsa")
    code = "from dsa_plugin.gan.config import packaged_configs as p; print(p())"
    shipped = _run([str(python), "-c", code], work, env)
    assert "hedngan-tiny" in shipped.stdout, shipped.stdout + shipped.stderr
    helped = _run([dsa, "gan-train", "--config", "hedngan", "--help"], work, env)
    assert helped.returncode == 0 and "--config" in helped.stdout, helped.stderr
    listed = _run([dsa, "gan-train", "--config", "configs/hedngan.yaml", "--list-keys"], work, env)
    assert listed.returncode == 0 and "data.crop_size = 256" in listed.stdout, listed.stderr
    for domain in ("day", "night"):
        (work / domain).mkdir()
        for i in range(2):
            Image.new("RGB", (96, 96), (60 * i, 90, 140 if domain == "day" else 20)).save(work / domain / f"{i}.png")
    trained = _run([dsa, "gan-train", "--config", "hedngan-tiny", "--out", "run", "--no-progress",
                    "data.day=day", "data.night=night", "train.max_iterations=2", "train.sample_every=0"], work,
                   {**env, "OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (work / "run" / "config.yaml").is_file()
    assert list((work / "run").rglob("*generator_X*.pth")), sorted(p.name for p in (work / "run").rglob("*"))
