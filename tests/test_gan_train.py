"""End-to-end GAN training: API outputs, resume (in-process and after kill -9), torchrun, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsa_plugin.gan import ResumeError, train
from dsa_plugin.gan.scalars import read_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.usefixtures("one_thread")]




def make_domain(folder: Path, n: int, bright: bool, size=(44, 36)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(bright) * 100 + n)
    for i in range(n):
        base = rng.integers(120, 255) if bright else rng.integers(0, 60)
        arr = np.clip(base + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{'d' if bright else 'n'}{i}.png")
    return folder


@pytest.fixture()
def daynight(tmp_path):
    return make_domain(tmp_path / "day", 4, True), make_domain(tmp_path / "night", 4, False)


def tiny_overrides(day, night, **extra):
    over = {"data.day": str(day), "data.night": str(night), "data.crop_size": 32, "data.resize_short": None,
            "data.cache_images": True, "data.epoch_size": 8, "model.ngf": 4, "model.n_blocks": 1, "model.ndf": 4,
            "model.n_layers": 1, "model.hed_width": 0.125, "train.batch_size": 2, "train.epochs": 3,
            "train.max_iterations": None, "train.sample_every": 5, "train.log_every": 1,
            "train.checkpoint_every": 1, "train.progress": False}
    over.update(extra)
    return over


def test_train_api_outputs(tmp_path, daynight):
    from dsa_plugin.models.checkpoint_files import load_checkpoint
    from dsa_plugin.models.checkpoints import load_generator

    result = train("tiny", tmp_path / "run", device="cpu", overrides=tiny_overrides(*daynight))
    assert result.iterations == 12 and result.epochs_completed == 3  # 3 epochs x (8 // 2) iterations
    raw = load_checkpoint(result.generator_path)
    assert set(raw) == {"type", "frozen", "network_params", "model_state"}  # reference 4-key layout
    assert raw["network_params"]["model"]["architecture"] == "official_resnet_generator"
    g = load_generator(result.generator_path)
    assert g(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    names = sorted(p.name for p in result.checkpoint_paths)
    assert names == ["generator_X_epoch_01.pth", "generator_X_epoch_02.pth", "generator_X_epoch_03.pth",
                     "generator_X_last.pth"]
    rows = read_jsonl(result.log_path)
    assert [r["iteration"] for r in rows] == list(range(1, 13))
    assert {"D", "G", "G_hed", "E_real", "E_fake", "lr"} <= set(rows[0])
    assert [p.name for p in result.sample_paths] == ["iter_000005.png", "iter_000010.png", "final.png"]
    w, h = Image.open(result.sample_paths[-1]).size
    assert w > 5 * 32 and h > 2 * 32  # 5 columns, 2 rows
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 12 and summary["generator"] == str(result.generator_path)
    # the lambda_p2p schedule ran per epoch (epochs 3, no decay epochs in tiny -> constant lr)
    assert rows[-1]["lr"] == pytest.approx(1e-3)


#: overrides that fit the zoo's tiny presets to tiny_overrides (1 residual block)
ZOO = {"cut": {"loss.nce_layers": "4,8,10", "loss.num_patches": 32}, "rcfgan": {}, "rcfngan": {}}


@pytest.mark.parametrize("variant", ["hedgan", "cyclegan", "cut", "rcfgan", "rcfngan"])
def test_other_variants_run(tmp_path, daynight, variant):
    extra = {"variant": variant, "train.epochs": 1, **ZOO.get(variant, {})}
    if variant == "cyclegan":
        extra.update({"model.norm": "instance", "model.init_type": "normal", "train.batch_size": 1,
                      "data.epoch_size": 3})
    preset = f"{variant}-tiny" if variant in ZOO else "tiny"
    result = train(preset, tmp_path / variant, overrides=tiny_overrides(*daynight, **extra))
    assert result.generator_path.is_file() and result.sample_paths
    if variant == "cyclegan":
        assert (tmp_path / variant / "checkpoints" / "generator_Y_last.pth").is_file()


def test_resume_mid_epoch_equals_uninterrupted_run(tmp_path, daynight):
    over = tiny_overrides(*daynight, **{"train.epochs": 2, "optim.n_epochs_decay": 1})
    full = train("tiny", tmp_path / "full", overrides=over)
    part = train("tiny", tmp_path / "part", overrides={**over, "train.max_iterations": 3})  # stops mid-epoch 0
    assert part.iterations == 3
    resumed = train("tiny", tmp_path / "part", overrides=over)
    assert resumed.resumed_from == 3 and resumed.iterations == full.iterations == 8
    a = torch.load(full.generator_path, weights_only=True)["model_state"]
    b = torch.load(resumed.generator_path, weights_only=True)["model_state"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    rows = read_jsonl(resumed.log_path)
    assert [r["iteration"] for r in rows] == list(range(1, 9))  # every iteration logged exactly once
    assert [r["lr"] for r in rows][-1] == pytest.approx(1e-3 / 2)  # decay epoch after resume
    kept = (tmp_path / "part" / "summary.json").read_bytes()
    again = train("tiny", tmp_path / "part", overrides=over)  # finished: nothing left to do
    assert again.summary["iterations_this_run"] == 0
    # the finished run's summary.json is not overwritten with the empty rerun
    assert (tmp_path / "part" / "summary.json").read_bytes() == kept
    assert json.loads(kept)["iterations_this_run"] == 5 and json.loads(kept)["final"]


@pytest.mark.parametrize("variant", ["cut", "rcfngan"])
def test_zoo_variants_resume_bit_identically(tmp_path, daynight, variant):
    over = tiny_overrides(*daynight, **{"train.epochs": 2, "optim.n_epochs_decay": 1, **ZOO[variant]})
    full = train(f"{variant}-tiny", tmp_path / "full", overrides=over)
    part = train(f"{variant}-tiny", tmp_path / "part", overrides={**over, "train.max_iterations": 3})
    resumed = train(f"{variant}-tiny", tmp_path / "part", overrides=over)
    assert part.iterations == 3 and resumed.resumed_from == 3 and resumed.iterations == full.iterations == 8
    a = torch.load(full.generator_path, weights_only=True)["model_state"]
    b = torch.load(resumed.generator_path, weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # incl. CUT's patch positions and the RCF student
    rows = read_jsonl(resumed.log_path)
    assert [r["iteration"] for r in rows] == list(range(1, 9))
    assert {"cut": {"G_nce", "G_idt"}, "rcfngan": {"G_hed", "E_real"}}[variant] <= set(rows[0])
    assert (tmp_path / "part" / "samples" / "final.png").is_file()


def test_weight_average_is_saved_and_resumes_bit_identically(tmp_path, daynight):
    """train.ema: the saved generator is the moving average of the raw weights (kept in the state),
    and a run stopped mid-epoch and resumed continues the same average."""
    from dsa_plugin.models.checkpoint_files import load_checkpoint

    over = tiny_overrides(*daynight, **{"train.epochs": 2, "train.ema": 0.5})
    full = train("tiny", tmp_path / "full", overrides=over)
    part = train("tiny", tmp_path / "part", overrides={**over, "train.max_iterations": 3})
    assert part.iterations == 3
    resumed = train("tiny", tmp_path / "part", overrides=over)
    assert resumed.resumed_from == 3 and resumed.iterations == full.iterations
    a = torch.load(full.generator_path, weights_only=True)["model_state"]
    b = torch.load(resumed.generator_path, weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "state_last.pth")
    raw, average = state["nets"]["generator_X"], state["ema"]["generator_X"]
    assert all(torch.equal(average[k], a[k]) for k in a)  # what was saved is the average
    assert any(not torch.equal(raw[k], a[k]) for k in a if a[k].is_floating_point())  # which is not the raw
    plain = train("tiny", tmp_path / "plain", overrides={**over, "train.ema": 0.0})
    c = torch.load(plain.generator_path, weights_only=True)["model_state"]
    assert all(torch.equal(raw[k], c[k]) for k in c)  # the raw weights train exactly as without ema


def test_identity_warmup_runs_once_and_resumes_bit_identically(tmp_path, daynight):
    over = tiny_overrides(*daynight, **{"train.epochs": 2, "train.identity_warmup": 30, "optim.lr": 1e-2})
    full = train("tiny", tmp_path / "full", overrides=over)
    warm = full.summary["identity_warmup"]["generator_X"]
    assert warm["iterations"] == 30 and warm["l1_last"] < 0.5 * warm["l1_first"]
    part = train("tiny", tmp_path / "part", overrides={**over, "train.max_iterations": 3})
    resumed = train("tiny", tmp_path / "part", overrides=over)
    assert resumed.resumed_from == 3 and "identity_warmup" not in resumed.summary  # not redone on resume
    a = torch.load(full.generator_path, weights_only=True)["model_state"]
    b = torch.load(resumed.generator_path, weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_jsonl(resumed.log_path)
    assert [r["iteration"] for r in rows] == [0, *range(1, 9)] and "warmup_L1_generator_X" in rows[0]
    assert part.iterations == 3
    # the warm-up changes the start, not the data: without it the same pairs give other weights
    plain = train("tiny", tmp_path / "plain", overrides={**over, "train.identity_warmup": 0})
    c = torch.load(plain.generator_path, weights_only=True)["model_state"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("key, value", [("data.crop_size", 24), ("optim.lr", 5e-4), ("data.day", "other"),
                                        ("data.scale", [0.5, 1.0]), ("data.resize_short", 40)])
def test_resume_refuses_changed_data_or_lr(tmp_path, daynight, key, value):
    over = tiny_overrides(*daynight, **{"train.max_iterations": 2})
    train("tiny", tmp_path / "run", overrides=over)
    if key == "data.day":
        value = str(make_domain(tmp_path / "day2", 4, True))
    changed = {**over, key: value, "train.max_iterations": 4}
    with pytest.raises(ResumeError, match=rf"different config \({key}: checkpoint .*, now .*\); use another output "
                                          r"directory or pass --no-resume") as err:
        train("tiny", tmp_path / "run", overrides=changed)
    assert "\n" not in str(err.value)
    # speed-only settings may change; --no-resume starts over with the new value
    assert train("tiny", tmp_path / "run", overrides={**over, "data.num_workers": 1, "train.max_iterations": 3}
                 ).resumed_from == 2
    assert train("tiny", tmp_path / "run", overrides=changed, resume=False).resumed_from is None


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "cut-tiny", "rcfngan-tiny"])
def test_kill_9_then_same_command_resumes(tmp_path, daynight, preset):
    from dsa_plugin.models.checkpoint_files import load_checkpoint

    zoo = ZOO.get(preset.removesuffix("-tiny"), {})
    over = tiny_overrides(*daynight, **{"train.epochs": 40, "data.epoch_size": 4, **zoo})  # 2 its/epoch, 80 its
    cmd = [sys.executable, "-m", "dsa_plugin.cli", "gan-train", "--config", preset, "--out", str(tmp_path / "run")]
    cmd += [f"{k}={'null' if v is None else v}" for k, v in over.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state = tmp_path / "run" / "checkpoints" / "state_last.pth"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # land somewhere in the middle of the run, possibly during a save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    killed_at = load_checkpoint(state)["iteration"]
    for path in (tmp_path / "run" / "checkpoints").glob("*.pth"):  # every file complete and loadable
        assert isinstance(load_checkpoint(path), dict), path
    assert killed_at < 80

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from iteration {killed_at}" in done.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["iterations"] == 80 and summary["resumed_from"] == killed_at
    rows = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert [r["iteration"] for r in rows] == list(range(1, 81))
    assert not list((tmp_path / "run").rglob("*.tmp"))
    # bit-identical to a run that was never killed
    whole = train(preset, tmp_path / "whole", overrides={**over, "train.progress": False})
    a = torch.load(whole.generator_path, weights_only=True)["model_state"]
    b = torch.load(tmp_path / "run" / "checkpoints" / "generator_X_last.pth", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from dsa_plugin.core.files import atomic_save as atomic_torch_save

    path = tmp_path / "state.pth"
    atomic_torch_save({"x": torch.ones(3)}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # power cut / kill while writing

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pth"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, daynight):
    over = tiny_overrides(*daynight, **{"train.epochs": 2, "train.batch_size": 1})  # 8 // (1 x 2) = 4 its/epoch
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "dsa_plugin.gan.cli", "--config", "tiny", "--out", str(tmp_path / "ddp")]
    cmd += [f"{k}={'null' if v is None else v}" for k, v in over.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["iterations"] == 8
    assert (tmp_path / "ddp" / "checkpoints" / "generator_X_last.pth").is_file()
    assert done.stdout.count("GAN training finished") == 1  # only rank 0 reports
    rows = read_jsonl(tmp_path / "ddp" / "log.jsonl")
    assert [r["iteration"] for r in rows] == list(range(1, 9))


def test_wrong_checkpoints_give_clear_errors(tmp_path, daynight):
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoint_files import CheckpointError
    from dsa_plugin.models.checkpoints import save_network

    gen = tmp_path / "gen.pth"
    save_network(gen, ResnetGenerator(ngf=4, n_blocks=1))
    over = tiny_overrides(*daynight, **{"model.hed_weights": str(gen), "model.hed_width": 1.0})
    with pytest.raises(CheckpointError, match="does not match HED"):
        train("tiny", tmp_path / "a", overrides=over)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        train("tiny", tmp_path / "b", overrides={**over, "model.hed_weights": str(garbage)})

    # a training state from another variant in the output directory
    train("tiny", tmp_path / "c", overrides=tiny_overrides(*daynight, **{"train.max_iterations": 1}))
    with pytest.raises(ResumeError, match="variant: checkpoint 'hedngan', now 'hedgan'"):
        train("tiny", tmp_path / "c", overrides=tiny_overrides(*daynight, variant="hedgan"))
    (tmp_path / "c" / "checkpoints" / "state_last.pth").write_bytes(b"truncated")
    with pytest.raises(ResumeError, match="cannot resume from .*state_last.pth"):
        train("tiny", tmp_path / "c", overrides=tiny_overrides(*daynight))


def test_cli_reports_empty_list_and_bad_image(tmp_path, daynight, capsys):
    from dsa_plugin.gan.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = ["--config", "tiny", "--out", str(tmp_path / "x"), "--no-progress"]
    over = tiny_overrides(*daynight)
    items = [f"{k}={'null' if v is None else v}" for k, v in over.items() if k != "data.night"]
    assert main(args + items + [f"data.night={empty}"]) == 2
    assert "night list" in capsys.readouterr().err
    small = make_domain(tmp_path / "small", 2, False, size=(20, 16))
    assert main(args + items + [f"data.night={small}"]) == 2
    assert "is smaller than the crop 32x32" in capsys.readouterr().err


def test_non_finite_loss_stops_at_its_iteration(tmp_path, daynight, monkeypatch, capsys):
    """A loss that turns NaN stops training at once, naming the iteration; the last finite checkpoint stays."""
    from dsa_plugin.gan import trainer as trainer_module
    from dsa_plugin.gan.cli import main as gan_main

    real_make_step = trainer_module.make_step

    class Diverging:
        """The real step (state_dict and all); its 6th call reports a NaN generator loss."""

        def __init__(self, step):
            self.step, self.calls = step, 0

        def __call__(self, day, night):
            losses, visuals = self.step(day, night)
            self.calls += 1
            if self.calls == 6:  # iteration 6: the second epoch's second step
                losses = {**losses, "G": torch.tensor(float("nan"))}
            return losses, visuals

        def __getattr__(self, name):
            return getattr(self.step, name)

    def make_step(*args, **kwargs):
        return Diverging(real_make_step(*args, **kwargs))

    monkeypatch.setattr(trainer_module, "make_step", make_step)
    over = [f"{k}={'null' if v is None else v}" for k, v in tiny_overrides(*daynight).items()]
    code = gan_main(["--config", "tiny", "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress", *over])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "iteration 6: non-finite loss (G=nan)" in lines[0], err
    assert "from iteration 4" in lines[0]  # the end of epoch 1 (4 iterations) was the last save
    state = torch.load(tmp_path / "run" / "checkpoints" / "state_last.pth", weights_only=False)
    assert state["iteration"] == 4


def test_night_colours_warmup_starts_the_generator_at_the_night_photos_colours(tmp_path, daynight):
    from dsa_plugin.models.checkpoints import load_generator

    over = tiny_overrides(*daynight, **{"train.identity_warmup": 60, "optim.lr": 1e-2, "train.max_iterations": 1,
                                        "train.ema": 0.0})
    runs = {t: train("tiny", tmp_path / t, overrides={**over, "train.warmup_target": t})
            for t in ("identity", "night-colours")}
    assert runs["night-colours"].summary["identity_warmup"]["target"] == "night-colours"
    day = torch.stack([torch.from_numpy(np.asarray(Image.open(p))).permute(2, 0, 1).float() / 127.5 - 1
                       for p in sorted(daynight[0].glob("*.png"))])[:, :, :32, :32]
    night_mean = np.mean([np.asarray(Image.open(p)).mean() / 127.5 - 1 for p in daynight[1].glob("*.png")])
    with torch.no_grad():
        means = {t: float(load_generator(r.generator_path).eval()(day).mean()) for t, r in runs.items()}
    # the fixture's days are bright (~0.5 in [-1, 1]) and its nights dark (~-0.8)
    assert abs(means["night-colours"] - night_mean) < 0.25 < abs(means["identity"] - night_mean)


def test_an_unknown_warmup_target_names_the_allowed_ones(tmp_path, daynight):
    from dsa_plugin.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.warmup_target must be one of \['identity', 'night-colours'\], "
                                          r"got 'dusk'"):
        train("tiny", tmp_path / "x", overrides=tiny_overrides(*daynight, **{"train.warmup_target": "dusk"}))
