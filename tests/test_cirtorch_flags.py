"""The --dsa-* flags, their validation (argparse-style errors, before any data) and YAML presets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.integrations.cirtorch.config import apply_yaml_defaults, pop_config_path
from dsa_plugin.integrations.cirtorch.flags import add_dsa_arguments, dsa_config_from_args

REPO = Path(__file__).resolve().parents[1]


def _cirtorch_like_parser() -> argparse.ArgumentParser:
    """The part of cirtorch's train.py parser the flags interact with (same dests and kinds)."""
    p = argparse.ArgumentParser(prog="train.py")
    p.add_argument("directory", metavar="EXPORT_DIR")
    p.add_argument("--arch", "-a", default="resnet101", choices=["alexnet", "resnet101", "vgg16", "squeezenet1_1"])
    p.add_argument("--not-pretrained", dest="pretrained", action="store_false")
    p.add_argument("--loss-margin", "-lm", default=0.7, type=float)
    p.add_argument("--image-size", default=1024, type=int)
    p.add_argument("--query-size", "-qs", default=2000, type=int)
    p.add_argument("--pool-size", "-ps", default=20000, type=int)
    p.add_argument("--lr", "--learning-rate", default=1e-6, type=float)
    return p


def _parser() -> argparse.ArgumentParser:
    return add_dsa_arguments(_cirtorch_like_parser())


def _error(capsys, parser, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        dsa_config_from_args(parser.parse_args(argv), parser)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_flags_off_by_default_leave_toolkit_args_unchanged():
    argv = ["exp", "--arch", "vgg16", "--loss-margin", "0.75", "--image-size", "362"]
    plain = vars(_cirtorch_like_parser().parse_args(argv))
    extended = vars(_parser().parse_args(argv))
    assert {k: v for k, v in extended.items() if not k.startswith("dsa_")} == plain
    config = dsa_config_from_args(argparse.Namespace(**extended), _parser())
    assert config == DSAConfig() and not config.enabled and config.tag() == ""


def test_add_is_idempotent():
    p = _parser()
    assert add_dsa_arguments(p) is p  # no "conflicting option string" on a second call


def test_every_flag_reaches_the_config(tmp_path):
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import save_network

    gen = tmp_path / "g.pth"
    save_network(gen, ResnetGenerator(ngf=4, n_blocks=1))
    p = _parser()
    args = p.parse_args([
        "exp", "--query-size", "20", "--dsa-generator", str(gen), "--dsa-night-ratio", "0.5",
        "--dsa-night-label", "anchor", "--dsa-diverse-anchors", "--dsa-qpool-size", "40",
        "--dsa-similar-exclude", "0.1", "--dsa-similar-include", "0.9", "--dsa-clahe", "--dsa-device", "cpu",
    ])
    config = dsa_config_from_args(args, p)
    assert config == DSAConfig(generator=str(gen), night_ratio=0.5, night_label="anchor", diverse_anchors=True,
                               qpool_size=40, similar_exclude=0.1, similar_include=0.9, clahe=True, device="cpu")
    assert config.tag() == "_dsa_night0.5_anchor_diverse40_0.1-0.9_clahe"
    small = dsa_config_from_args(p.parse_args(["exp", "--dsa-clahe", "--dsa-clahe-grid", "2"]), p)
    assert small.clahe_grid == 2 and small.tag() == "_clahe2"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dsa-night-ratio", "1.5"], "--dsa-night-ratio must be in [0, 1], got 1.5"),
        (["--dsa-night-ratio", "-0.1"], "--dsa-night-ratio must be in [0, 1]"),
        (["--dsa-similar-exclude", "0.8", "--dsa-similar-include", "0.2"],
         "--dsa-similar-include (0.2) must be >= --dsa-similar-exclude (0.8)"),
        (["--dsa-qpool-size", "0"], "--dsa-qpool-size must be a positive integer"),
        (["--dsa-clahe-grid", "0"], "--dsa-clahe-grid must be a positive number of tiles"),
        (["--dsa-diverse-anchors", "--dsa-qpool-size", "100", "--query-size", "2000"],
         "--dsa-qpool-size (100) must be >= --query-size (2000)"),
        (["--dsa-generator", "/nonexistent/gen.pth"], "--dsa-generator: file not found: /nonexistent/gen.pth"),
    ],
)
def test_bad_values_are_argparse_errors(capsys, argv, message):
    err = _error(capsys, _parser(), ["exp", *argv])
    assert "usage:" in err and message in err


def test_bad_device_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["exp", "--dsa-device", "gpu0"])
    assert "expected cpu, cuda or cuda:N, got 'gpu0'" in capsys.readouterr().err


def test_generator_file_that_is_not_a_generator(capsys, tmp_path):
    not_gen = tmp_path / "embed.pth"
    torch.save({"features.0.weight": torch.zeros(2, 3, 3, 3), "pool.p": torch.ones(1)}, not_gen)
    err = _error(capsys, _parser(), ["exp", "--dsa-generator", str(not_gen)])
    assert f"--dsa-generator: {not_gen} is not a day->night generator checkpoint" in err
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    assert "is not a day->night generator checkpoint" in _error(
        capsys, _parser(), ["exp", "--dsa-generator", str(garbage)]
    )
    assert "is a directory" in _error(capsys, _parser(), ["exp", "--dsa-generator", str(tmp_path)])


def test_night_cache_mismatch_and_absence(capsys, tmp_path, tiny_db):
    from dsa_plugin.data.sfm import db_paths, load_sfm_db
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import save_network
    from dsa_plugin.night.build import build_night_cache
    from dsa_plugin.night.translator import NightTranslator

    torch.manual_seed(0)
    gen_a, gen_b = tmp_path / "a.pth", tmp_path / "b.pth"
    save_network(gen_a, ResnetGenerator(ngf=4, n_blocks=1))
    save_network(gen_b, ResnetGenerator(ngf=4, n_blocks=1))
    pkl, ims = db_paths(tiny_db)
    db = load_sfm_db(pkl, "train", ims)
    from dsa_plugin.models.checkpoints import load_generator

    cache = tmp_path / "cache"
    build_night_cache(cache, db.images, NightTranslator(load_generator(gen_a)), ratio=0.25, image_size=64,
                      progress=False, workers=0)
    ok = ["exp", "--image-size", "64", "--dsa-night-cache", str(cache), "--dsa-generator", str(gen_a)]
    p = _parser()
    assert dsa_config_from_args(p.parse_args(ok), p).night_cache == str(cache)
    err = _error(capsys, _parser(), ["exp", "--image-size", "64", "--dsa-night-cache", str(cache),
                                      "--dsa-generator", str(gen_b)])
    assert "--dsa-night-cache: stale night cache" in err and "generator" in err
    err = _error(capsys, _parser(), [*ok, "--dsa-night-ratio", "0.5"])
    assert "ratio: expected 0.5, found 0.25" in err
    err = _error(capsys, _parser(), ["exp", "--image-size", "362", "--dsa-night-cache", str(cache)])
    assert "image_size: expected 362, found 64" in err
    err = _error(capsys, _parser(), ["exp", "--dsa-night-cache", str(tmp_path / "none")])
    assert "--dsa-night-cache: no night cache at" in err


# ---------------------------------------------------------------- YAML presets


def test_pop_config_path():
    p = _parser()
    argv = ["exp", "--config", "a.yaml", "--lr", "1"]
    assert pop_config_path(argv, p) == "a.yaml" and argv == ["exp", "--lr", "1"]
    argv = ["--config=b.yaml", "exp"]
    assert pop_config_path(argv, p) == "b.yaml" and argv == ["exp"]
    assert pop_config_path(["exp"], p) is None


def test_yaml_defaults_and_cli_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "directory: exports\narch: vgg16\nloss-margin: 0.75\nlr: 5e-7\npretrained: false\nimage_size: 362\n"
        "dsa:\n  night_ratio: 0.3\n  diverse_anchors: true\n  clahe: true\n  qpool_size: 10000\n  skip_test: true\n"
    )
    p = _parser()
    apply_yaml_defaults(p, cfg)
    args = p.parse_args(["--loss-margin", "0.85", "--dsa-night-ratio", "0.25"])
    assert args.directory == "exports" and args.arch == "vgg16" and args.pretrained is False
    assert args.lr == 5e-7 and args.image_size == 362  # "5e-7" is a string to PyYAML; argparse's type converts it
    assert args.loss_margin == 0.85 and args.dsa_night_ratio == 0.25  # the command line wins
    assert args.dsa_diverse_anchors and args.dsa_clahe and args.dsa_skip_test
    assert p.parse_args(["other"]).directory == "other"


@pytest.mark.parametrize(
    "text, message",
    [
        ("arch: resnet1O1\n", "arch: invalid choice 'resnet1O1'"),
        ("no_such_flag: 1\n", "unknown key 'no_such_flag'"),
        ("dsa:\n  ratio: 0.3\n", "unknown key(s) ['ratio'] in 'dsa'"),
        ("image-size: 36.5\n", "image-size must be an integer"),
        ("pretrained: maybe\n", "pretrained must be true or false"),
        ("- a\n- b\n", "must hold a mapping"),
        ("dsa:\n  night_ratio: 2.0\n", "--dsa-night-ratio must be in [0, 1], got 2.0"),
    ],
)
def test_bad_yaml_is_an_argparse_error(capsys, tmp_path, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    p = _parser()
    with pytest.raises(SystemExit) as exc:
        apply_yaml_defaults(p, cfg)
        dsa_config_from_args(p.parse_args(["exp"]), p)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_shipped_cirtorch_configs_parse():
    configs = sorted((REPO / "configs" / "cirtorch").glob("*.yaml"))
    assert {c.name for c in configs} >= {"gem_vgg16_hedngan.yaml", "gem_resnet101_hedngan.yaml",
                                         "gem_vgg16_cyclegan.yaml", "gem_resnet101_cyclegan.yaml"}
    for cfg in configs:
        p = _cirtorch_like_parser()
        for name in ("--training-dataset", "--pool", "--loss", "--optimizer", "--test-datasets", "--test-whiten"):
            p.add_argument(name, default=None)
        for name, typ in (("--weight-decay", float), ("--neg-num", int), ("--epochs", int), ("--batch-size", int),
                          ("--test-freq", int), ("--workers", int)):
            p.add_argument(name, type=typ, default=None)
        add_dsa_arguments(p)
        apply_yaml_defaults(p, cfg)
        args = p.parse_args([])
        config = dsa_config_from_args(args, p, check_files=False)
        arch = "vgg16" if "vgg16" in cfg.name else "resnet101"
        gan = "hedngan" if "hedngan" in cfg.name else "cyclegan"
        assert args.arch == arch and args.loss_margin == (0.75 if arch == "vgg16" else 0.85)
        assert (args.lr, args.weight_decay, args.epochs, args.neg_num) == (5e-7, 5e-4, 40, 5)
        assert (args.query_size, args.pool_size, args.image_size, args.batch_size) == (2000, 22000, 362, 5)
        assert config.generator.endswith(f"/{gan}_generator_X.pth")
        assert config.diverse_anchors and config.clahe and config.qpool_size == 10000
        assert (config.night_ratio, config.similar_exclude, config.similar_include) == (0.25, 0.2, 0.8)


def test_wrapper_without_cirtorch_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    from dsa_plugin.integrations.cirtorch import cli as cirtorch_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cirtorch" else real(name, *a))
    assert cirtorch_cli.main(["exports", "--dsa-clahe"]) == 2
    err = capsys.readouterr().err
    assert "cirtorch is not installed" in err and "pip install --no-deps -e" in err


def _generator_file(path: Path, seed: int) -> Path:
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import save_network

    torch.manual_seed(seed)
    save_network(path, ResnetGenerator(ngf=4, n_blocks=1))
    return path


def test_export_tag_names_the_generator(tmp_path):
    from dsa_plugin.integrations.cirtorch import export_tag

    p = _parser()
    tags = []
    for seed in (0, 1):
        gen = _generator_file(tmp_path / f"g{seed}.pth", seed)
        args = p.parse_args(["exp", "--dsa-generator", str(gen)])
        dsa_config_from_args(args, p)
        tags.append(export_tag(args))
    assert tags[0] != tags[1]
    assert all(t.startswith("_dsa_night0.25_anc_g") and len(t) == len("_dsa_night0.25_anc_g") + 8 for t in tags)


def test_resume_refuses_other_dsa_settings(tmp_path, capsys):
    from dsa_plugin.integrations.cirtorch.hooks import DSARun, _ResumeGuard

    p = _parser()
    gens = [_generator_file(tmp_path / f"g{seed}.pth", seed) for seed in (0, 1)]

    def run(*flags):
        args = p.parse_args(["exp", *flags])
        return DSARun(config=dsa_config_from_args(args, p), args=args, cpu_only=True)

    trained = run("--dsa-generator", str(gens[0]), "--dsa-clahe")
    ckpt = tmp_path / "model_epoch1.pth.tar"
    torch.save({"epoch": 1, "state_dict": {}, "dsa": {"config": trained.config.to_dict(), "tag": trained.tag,
                                                      "generator_fingerprint": trained.generator_fingerprint}}, ckpt)
    plain = tmp_path / "plain.pth.tar"
    torch.save({"epoch": 1, "state_dict": {}}, plain)

    assert _ResumeGuard(torch, trained, p).load(ckpt)["epoch"] == 1  # the same flags: resumed
    cases = [
        (run("--dsa-generator", str(gens[1]), "--dsa-clahe"), ckpt, "generator_fingerprint"),
        (run("--dsa-generator", str(gens[0])), ckpt, "clahe: checkpoint True, now False"),
        (run(), ckpt, "trained with DSA"),
        (trained, plain, "trained without DSA settings"),
    ]
    for other, path, message in cases:
        with pytest.raises(SystemExit) as exc:
            _ResumeGuard(torch, other, p).load(path)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert _ResumeGuard(torch, run(), p).load(plain)["epoch"] == 1
    assert _ResumeGuard(torch, trained, p).zeros(2).shape == (2,)  # the rest is torch
