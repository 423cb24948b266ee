"""GAN config: presets = YAML files = the paper's settings; overrides; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsa_plugin.core.config import ConfigError
from dsa_plugin.gan.config import GanConfig, load_config, preset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["hedngan", "hedgan", "cyclegan", "cut", "rcfgan", "rcfngan",
                                  "cut-tiny", "rcfgan-tiny", "rcfngan-tiny"])
def test_yaml_files_equal_presets(name):
    assert load_config(CONFIGS / f"{name}.yaml").to_dict() == preset(name).to_dict()


def test_tiny_yaml_equals_tiny_preset():
    assert load_config(CONFIGS / "hedngan-tiny.yaml").to_dict() == preset("tiny").to_dict()


def test_paper_settings():
    h, c = preset("hedngan"), preset("cyclegan")
    assert (h.variant, h.model.norm, h.model.init_type, h.model.init_gain) == ("hedngan", "batch", "kaiming", 0.2)
    assert (h.train.epochs, h.optim.n_epochs_decay, h.train.batch_size, h.data.epoch_size) == (50, 25, 10, 10000)
    assert (h.loss.adversarial, h.loss.edge, h.loss.hed) == (1.0, 5.0, 1.0)
    assert (h.optim.lr, h.optim.betas, h.optim.detector_lr, h.optim.detector_weight_decay) == (
        2e-4, (0.5, 0.999), 1e-6, 2e-4)
    assert (h.data.crop_size, h.data.scale) == (256, (0.8, 1.0))
    assert (c.model.norm, c.model.init_type, c.train.epochs, c.optim.n_epochs_decay, c.train.batch_size,
            c.loss.cycle, c.loss.pool_size) == ("instance", "normal", 100, 50, 1, 10.0, 50)


def test_overrides_dotted_and_typed():
    cfg = load_config("tiny", ["data.crop_size=32", "train.max_iterations=7", "data.scale=[0.5, 0.9]",
                               "model.hed_weights=null", "device=cpu"])
    assert (cfg.data.crop_size, cfg.train.max_iterations, cfg.data.scale) == (32, 7, (0.5, 0.9))
    cfg = load_config(cfg, {"train.max_iterations": None})
    assert cfg.train.max_iterations is None


def test_yaml_may_start_from_a_preset(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("preset: tiny\ntrain:\n  max_iterations: 3\n")
    cfg = load_config(path)
    assert cfg.train.max_iterations == 3 and cfg.model.ngf == preset("tiny").model.ngf


def test_unknown_key_names_it_and_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["data.crop_sise=32"])
    assert "data.crop_sise" in str(err.value) and "data.crop_size" in str(err.value)
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  ngf: 8\n  nblocks: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "model.nblocks" in str(err.value) and "model.n_blocks" in str(err.value)


@pytest.mark.parametrize("override, fragment", [
    (["data.crop_size=abc"], "data.crop_size must be int"),
    (["train.amp=1"], "train.amp must be bool"),
    (["variant=pix2pix"], "variant must be one of"),
    (["model.norm=group"], "model.norm"),
    (["data.scale=[0.9, 0.5]"], "data.scale"),
    (["device=gpu"], "device must be"),
    (["model.hed_weights=hed.pth", "model.hed_width=0.5"], "model.hed_width"),
    (["crop_size"], "key=value"),
])
def test_bad_values_are_rejected_clearly(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("tiny", override)


def test_unknown_preset_or_missing_file():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-config.yaml")


def test_cli_unknown_key_exit_code(capsys):
    from dsa_plugin.gan.cli import main

    assert main(["--config", "tiny", "train.max_iters=3"]) == 2
    err = capsys.readouterr().err
    assert "train.max_iters" in err and "train.max_iterations" in err


def test_cli_list_keys(capsys):
    from dsa_plugin.gan.cli import main

    assert main(["--config", "cyclegan", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "model.norm = 'instance'" in out and len(out.splitlines()) == len(GanConfig.keys())
