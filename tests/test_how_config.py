"""The `dsa:` section of HOW parameter files, the HOW configs, the patch and the runtime fixes.

Tests that need HOW's source read it from $HOW_SRC (or an importable `how`) and skip otherwise.
"""

from __future__ import annotations

import collections
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dsa_plugin.core.config import ConfigError, DSAConfig
from dsa_plugin.integrations.how import checkpoints as how_checkpoints
from dsa_plugin.integrations.how import cli as how_cli
from dsa_plugin.integrations.how import locate as how_locate
from dsa_plugin.integrations.how import params as how_params
from dsa_plugin.integrations.how import runtime as how_runtime
from dsa_plugin.integrations.how import transforms as how_transforms
from dsa_plugin.integrations.how import tuples as how_tuples

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "how"
PATCH = REPO / "patches" / "how-train.patch"
HEDNGAN_URL = "http://ptak.felk.cvut.cz/personal/jenicto2/download/iccv23_gan/hedngan_generator_X.pth"


def _how_root() -> Path:
    try:
        return how_locate.locate_how()
    except how_locate.HOWIntegrationError as err:
        pytest.skip(f"HOW source not available: {err}")


@pytest.fixture()
def how_io():
    """HOW's own io_helpers (its YAML loader with `__template__`); skips without HOW."""
    root = _how_root()
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_how_io_helpers_for_tests", root / "how" / "utils" / "io_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("_how_io_helpers_for_tests", None)
    return root, module


# ---------------------------------------------------------------------------------------------
# the `dsa:` section


def test_no_section_is_none():
    assert how_params.dsa_config_from_params({"training": {}}) is None


def test_section_parsed_into_dsaconfig(tmp_path):
    gen = tmp_path / "g.pth"
    gen.write_bytes(b"x")
    config = how_params.dsa_config_from_params(
        {"dsa": {"generator": str(gen), "night_ratio": 0.5, "diverse_anchors": True, "qpool_size": 7, "clahe": True}}
    )
    assert config == DSAConfig(generator=str(gen), night_ratio=0.5, diverse_anchors=True, qpool_size=7, clahe=True)


def test_empty_section_is_defaults_and_off():
    config = how_params.dsa_config_from_params({"dsa": None})
    assert config == DSAConfig() and not config.enabled


def test_unknown_key_is_named_with_valid_keys():
    with pytest.raises(ConfigError) as err:
        how_params.validate_params({"dsa": {"night_ration": 0.3}}, "params.yml")
    text = str(err.value)
    assert "night_ration" in text and "params.yml: dsa" in text
    for key in DSAConfig.keys():
        assert key in text


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("night_ratio", "quarter", ["night_ratio", "quarter"]),
        ("diverse_anchors", "yes", ["diverse_anchors", "bool"]),
        ("qpool_size", 10.5, ["qpool_size", "int"]),
        ("qpool_size", True, ["qpool_size"]),
        ("clahe", 1, ["clahe", "bool"]),
        ("night_ratio", 1.5, ["night_ratio", "[0, 1]"]),
        ("device", "gpu0", ["device", "gpu0"]),
    ],
)
def test_wrong_types_and_values(key, value, words):
    with pytest.raises(ConfigError) as err:
        how_params.validate_params({"dsa": {key: value}}, "p.yml")
    for word in words:
        assert word in str(err.value)


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        how_params.validate_params({"dsa": ["generator", "x"]}, "p.yml")


def test_missing_generator_and_cache_are_named(tmp_path):
    with pytest.raises(ConfigError, match="generator file not found: .*nope.pth"):
        how_params.validate_params({"dsa": {"generator": str(tmp_path / "nope.pth")}})
    with pytest.raises(ConfigError, match="night_cache directory not found"):
        how_params.validate_params({"dsa": {"night_cache": str(tmp_path / "cache")}})
    # URLs are fetched (and checked) when the night source is built, not here.
    assert how_params.validate_params({"dsa": {"generator": HEDNGAN_URL}}).generator == HEDNGAN_URL


# ---------------------------------------------------------------------------------------------
# HOW's `__template__` inheritance applies to `dsa:` as to HOW's own keys


def test_template_inheritance_of_dsa_section(how_io, tmp_path):
    _, io = how_io
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.yml").write_text(yaml.safe_dump(
        {"training": {"epochs": 3}, "dsa": {"night_ratio": 0.25, "clahe": True, "diverse_anchors": True}}))
    (tmp_path / "dsa_part.yml").write_text(yaml.safe_dump({"qpool_size": 50, "similar_exclude": 0.1}))
    (tmp_path / "child.yml").write_text(yaml.safe_dump({
        "__template__": "sub/base.yml",
        "training": {"epochs": 1},
        "dsa": {"__template__": "dsa_part.yml", "night_ratio": 0.5},
    }))
    params = io.load_params(str(tmp_path / "child.yml"))
    assert params["training"] == {"epochs": 1}
    config = how_params.validate_params(params)
    assert config == DSAConfig(night_ratio=0.5, clahe=True, diverse_anchors=True, qpool_size=50, similar_exclude=0.1)


def test_bad_key_inherited_from_template_is_caught(how_io, tmp_path):
    _, io = how_io
    (tmp_path / "base.yml").write_text(yaml.safe_dump({"dsa": {"clahe": True, "ratio": 0.2}}))
    (tmp_path / "child.yml").write_text(yaml.safe_dump({"__template__": "base.yml", "dsa": {"clahe": False}}))
    with pytest.raises(ConfigError, match=r"\['ratio'\]"):
        how_params.validate_params(io.load_params(str(tmp_path / "child.yml")))


# ---------------------------------------------------------------------------------------------
# shipped configs


@pytest.mark.parametrize("variant", ["r18", "r50-"])
def test_configs_have_paper_dsa_settings(variant):
    raw = yaml.safe_load((CONFIGS / f"train_how_{variant}_dsa.yml").read_text())
    assert raw["__template__"] == f"train_how_{variant}.yml"
    config = how_params.validate_params(raw, f"train_how_{variant}_dsa.yml")
    assert config == DSAConfig(generator=HEDNGAN_URL, night_ratio=0.25, night_label="anc", diverse_anchors=True,
                               qpool_size=10000, similar_exclude=0.2, similar_include=0.8, clahe=True)


@pytest.mark.parametrize("variant", ["r18", "r50-"])
def test_configs_inherit_hows_eccv20_parameters(how_io, variant):
    root, io = how_io
    with how_params.template_fallback(io, root):
        ours = io.load_params(str(CONFIGS / f"train_how_{variant}_dsa.yml"))
    hows = io.load_params(str(root / "examples" / "params" / "eccv20" / f"train_how_{variant}.yml"))
    dsa = ours.pop("dsa")
    assert ours == hows  # everything but `dsa:` is HOW's own recipe, untouched
    assert DSAConfig.from_dict(dsa).enabled


def test_template_fallback_only_when_missing_beside(how_io, tmp_path):
    root, io = how_io
    # A template next to the file wins over HOW's own file of the same name.
    (tmp_path / "train_how_r18.yml").write_text(yaml.safe_dump({"mine": 1}))
    (tmp_path / "p.yml").write_text(yaml.safe_dump({"__template__": "train_how_r18.yml"}))
    with how_params.template_fallback(io, root):
        assert io.load_params(str(tmp_path / "p.yml")) == {"mine": 1}
    (tmp_path / "q.yml").write_text(yaml.safe_dump({"__template__": "no_such_template.yml"}))
    with how_params.template_fallback(io, root), pytest.raises(FileNotFoundError):
        io.load_params(str(tmp_path / "q.yml"))


# ---------------------------------------------------------------------------------------------
# the patch


def test_patch_touches_only_hows_train_files():
    text = PATCH.read_text()
    files = sorted({line[len("+++ b/"):] for line in text.splitlines() if line.startswith("+++ b/")})
    assert files == ["examples/demo_how.py", "how/stages/train.py"]
    assert "dsa_plugin.integrations.how import install_dsa" in text
    assert "dsa_plugin.integrations.how import validate_params" in text


def test_patch_applies_to_how_source(tmp_path):
    root = _how_root()
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    copy = tmp_path / "how"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".git", "how_data", "__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    check = subprocess.run(["git", "apply", "--check", str(PATCH)], cwd=copy, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    subprocess.run(["git", "apply", str(PATCH)], cwd=copy, check=True)
    train_py = (copy / "how" / "stages" / "train.py").read_text()
    assert "def train(demo_train, training, validation, model, globals, dsa=None):" in train_py
    assert 'globals.get("tuples_dataset", TuplesDataset)' in train_py
    assert 'assert loss.keys() == {"margin"}' in train_py  # the HEAD NameError is gone
    compile(train_py, "train.py", "exec")
    compile((copy / "examples" / "demo_how.py").read_text(), "demo_how.py", "exec")


# ---------------------------------------------------------------------------------------------
# locating HOW, command-line errors


def test_locate_how_names_what_was_tried(tmp_path, monkeypatch):
    with pytest.raises(how_locate.HOWIntegrationError, match=r"--how-src = .*lacks how/stages/train.py"):
        how_locate.locate_how(tmp_path)
    monkeypatch.setenv("HOW_SRC", str(tmp_path / "missing"))
    with pytest.raises(how_locate.HOWIntegrationError, match=r"\$HOW_SRC"):
        how_locate.locate_how()


def test_cli_without_how_is_a_clear_error(tmp_path, capsys):
    params = tmp_path / "p.yml"
    params.write_text("dsa: {clahe: true}\n")
    assert how_cli.main([str(params), "--how-src", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "HOW source not found" in err and "git clone https://github.com/gtolias/how" in err


def test_resolve_params_path_like_how(tmp_path):
    assert how_params.resolve_params_path("x/p.yml", tmp_path) == Path("x/p.yml")
    assert how_params.resolve_params_path("eccv20.how_r18_dsa", tmp_path) == (
        tmp_path / "examples" / "params" / "eccv20" / "train_how_r18_dsa.yml")


# ---------------------------------------------------------------------------------------------
# runtime fixes


def test_fixed_initialize_loss():
    pytest.importorskip("cirtorch")
    loss = how_runtime.fixed_initialize_loss({"margin": 0.8}, "cpu")
    x = torch.nn.functional.normalize(torch.randn(8, 4), dim=0)
    label = torch.tensor([-1.0, 1.0, 0.0, 0.0])
    # cirtorch's contrastive loss, written out: 0.5 d^2 for the positive, 0.5 max(0, m - d)^2 for negatives.
    d = ((x[:, :1] - x[:, 1:] + 1e-6) ** 2).sum(0).sqrt()
    expected = 0.5 * d[0] ** 2 + 0.5 * (torch.clamp(0.8 - d[1:], min=0) ** 2).sum()
    assert torch.allclose(loss(x, label), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="margin"):
        how_runtime.fixed_initialize_loss({"margin": 0.8, "eps": 1}, "cpu")


def test_grid_accepts_removed_b_keyword():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        grid = how_runtime._grid_accepting_b(type(ax).grid)
        grid(ax, b=True, which="major", color="k", linestyle="-")
        assert all(line.get_visible() for line in ax.xaxis.get_gridlines())
        grid(ax, b=False, which="major")
        assert not any(line.get_visible() for line in ax.xaxis.get_gridlines())
    finally:
        plt.close(fig)


class _NotAllowed:
    pass


def _how_like_checkpoint(path):
    scores = collections.defaultdict(list)  # HOW's Validation.scores
    scores["train_loss"].append((1, 0.25))
    scores["local_descriptor"] = collections.defaultdict(list)
    scores["local_descriptor"]["val_eccv20"].append((1, np.float64(71.5)))
    state = {"epoch": 1, "best_score": np.float64(71.5), "scores": scores,
             "pca": np.arange(6, dtype=np.float32).reshape(2, 3), "state_dict": {"w": torch.ones(2)}}
    torch.save(state, path)
    return state


def test_how_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "model_epoch1.pth"
    state = _how_like_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # torch's default refuses HOW's numpy/defaultdict content
    loaded = how_checkpoints.load_how_checkpoint(path)
    assert loaded["best_score"] == 71.5 and isinstance(loaded["best_score"], np.float64)
    assert loaded["scores"] == {"train_loss": [(1, 0.25)], "local_descriptor": {"val_eccv20": [(1, 71.5)]}}
    assert np.array_equal(loaded["pca"], state["pca"]) and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    # Scoped: outside the helper torch's default is untouched, and other types stay refused inside it.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    torch.save({"x": _NotAllowed()}, tmp_path / "other.pth")
    with how_checkpoints.how_checkpoint_loading(), pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "other.pth", weights_only=True)


# ---------------------------------------------------------------------------------------------
# CLAHE in HOW's transform


def test_clahe_compose_equals_clahe_then_hows_normalisation():
    from PIL import Image
    from torchvision import transforms as T

    from dsa_plugin.transforms import clahe

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plain = T.Compose([T.ToTensor(), T.Normalize(mean, std)])  # HOW's build_transforms
    ours = how_transforms.ClaheCompose(plain)
    x01 = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0
    expected = (clahe(x01[None], 1.0, (8, 8))[0] - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(ours(img), expected, atol=1e-6)
    assert not torch.allclose(plain(img), expected, atol=1e-2)  # CLAHE changes the image
    assert how_transforms.plain_transform(ours) is plain


def test_plain_transform_unwraps_runtime_fix_wrapper():
    from torchvision import transforms as T

    from dsa_plugin.integrations.compat import WithRuntimeFixes

    plain = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    assert how_transforms.plain_transform(WithRuntimeFixes(how_transforms.ClaheCompose(plain))) is plain
    assert how_transforms.plain_transform(WithRuntimeFixes(plain)) is plain
    assert how_transforms.mean_std_of(WithRuntimeFixes(plain)) == [[0.5] * 3, [0.5] * 3]


def test_dsa_device_must_be_hows_device():
    how_tuples.check_device(DSAConfig(device=None), torch.device("cpu"))
    how_tuples.check_device(DSAConfig(device="cpu"), torch.device("cpu"))
    how_tuples.check_device(DSAConfig(device="cuda"), torch.device("cuda:0"))
    with pytest.raises(ConfigError, match=r"dsa.device is 'cuda:1' but HOW trains on cpu"):
        how_tuples.check_device(DSAConfig(device="cuda:1"), torch.device("cpu"))
