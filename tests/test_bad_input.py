"""Every bad input is one clear error line and exit status 2, never a traceback: one table, every CLI.

Each case builds its inputs in ``tmp_path`` (tiny images, tiny dbs, a tiny generator) and runs
``dsa <command> ...`` in-process: an uncaught exception fails the test with its traceback. The
stderr must hold exactly one ``error`` line (argparse's ``usage:`` lines may precede it) that
names the offending file, key or value.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from dsa_plugin.cli import main as dsa_main

# ------------------------------------------------------------------------------------ inputs


def _generator(tmp: Path) -> Path:
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import save_network

    path = tmp / "g.pth"
    if not path.exists():
        torch.manual_seed(0)
        save_network(path, ResnetGenerator(ngf=4, n_blocks=1))
    return path


def _generator_bad_params(tmp: Path) -> Path:
    """The reference 4-key layout, but ``network_params`` is a list instead of a dict."""
    state = torch.load(_generator(tmp), weights_only=True)
    state = state.get("model_state", state) if isinstance(state, dict) else state
    path = tmp / "g_bad_params.pth"
    torch.save({"type": "SingleNetwork", "frozen": True, "network_params": [1, 2], "model_state": state}, path)
    return path


def _nan_generator(tmp: Path) -> Path:
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import save_network

    net = ResnetGenerator(ngf=4, n_blocks=1)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    path = tmp / "g_nan.pth"
    save_network(path, net)
    return path


def _nan_embedding(tmp: Path) -> Path:
    from dsa_plugin.evaluation.networks import build_gem_network

    net = build_gem_network("resnet18")
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    path = tmp / "embed_nan.pth"
    # cirtorch's own checkpoint layout ({meta, state_dict})
    torch.save({"meta": {"architecture": "resnet18", "pooling": "gem", "whitening": False, "local_whitening": False,
                         "regional": False, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                         "outputdim": 512}, "state_dict": net.state_dict()}, path)
    return path


def _image_list(tmp: Path, size: tuple[int, int] = (32, 24), name: str = "img.png") -> Path:
    Image.new("RGB", size, (90, 120, 150)).save(tmp / name)
    (tmp / "list.txt").write_text(f"{name}\n")
    return tmp / "list.txt"


def _db(tmp: Path) -> Path:
    from dsa_plugin.data import make_tiny_sfm_db

    return make_tiny_sfm_db(tmp / "root", clusters=8, images_per_cluster=2, size=(24, 32))


def _broken_db(tmp: Path, mutate: Callable[[dict], object]) -> Path:
    with open(_db(tmp), "rb") as f:
        db = pickle.load(f)
    db = mutate(db) or db
    path = tmp / "root" / "train" / "retrieval-SfM-120k" / "retrieval-SfM-120k.pkl"
    path.write_bytes(pickle.dumps(db))
    return path


def _folder(tmp: Path, rows: list[str] | bytes) -> Path:
    folder = tmp / "folder"
    folder.mkdir(exist_ok=True)
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        Image.new("RGB", (24, 24)).save(folder / name)
    text = rows if isinstance(rows, bytes) else "\n".join(["file,domain,place_id", *rows, ""]).encode()
    (folder / "labels.csv").write_bytes(text)
    return folder


GOOD_ROWS = ["a.jpg,day,p1", "b.jpg,night,p1", "c.jpg,day,p2", "d.jpg,night,p2"]


def _gan_config(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "gan.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _gan_data(tmp: Path) -> list[str]:
    for name in ("day", "night"):
        (tmp / name).mkdir(exist_ok=True)
        for i in range(2):
            Image.new("RGB", (48, 48), (40 * i, 80, 120)).save(tmp / name / f"{i}.png")
    return [f"data.day={tmp / 'day'}", f"data.night={tmp / 'night'}", "train.max_iterations=1"]


def _how_params(tmp: Path, text: str) -> Path:
    path = tmp / "how.yml"
    path.write_text(text)
    return path


def _how_root() -> Path:
    from dsa_plugin.integrations.how import locate as how_locate

    for module in ("cirtorch", "asmk", "faiss"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"HOW needs '{module}'")
    try:
        return how_locate.locate_how()
    except how_locate.HOWIntegrationError as err:
        pytest.skip(str(err))


def _needs_cirtorch() -> None:
    if importlib.util.find_spec("cirtorch") is None:
        pytest.skip("cirtorch is not installed")


def _no_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU message")


MARKER = "PAYLOAD-RAN"


class _Payload:
    """Unpickling it writes ``MARKER`` beside the pickle (it names ``os.system``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.folder / MARKER}",)


def _payload_pickle(tmp: Path, name: str = "evil.pkl") -> Path:
    path = tmp / name
    path.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [], "x": _Payload(tmp)}))
    return path


def _payload_checkpoint(tmp: Path) -> Path:
    path = tmp / "payload.pth"
    torch.save({"state_dict": {}, "epoch": 1, "x": _Payload(tmp)}, path)
    return path


def _int64_generator(tmp: Path) -> Path:
    state = torch.load(_generator(tmp), weights_only=True)
    state["model_state"] = {k: v.to(torch.int64) for k, v in state["model_state"].items()}
    path = tmp / "g_int64.pth"
    torch.save(state, path)
    return path


def _embedding_meta(tmp: Path, **meta) -> Path:
    from dsa_plugin.evaluation.networks import build_gem_network

    net = build_gem_network("gem_small", outputdim=16)
    path = tmp / "embed_meta.pth"
    torch.save({"meta": {"architecture": "gem_small", "pooling": "gem", "mean": [0.485, 0.456, 0.406],
                         "std": [0.229, 0.224, 0.225], **meta}, "state_dict": net.state_dict()}, path)
    return path


def _deep_yaml(tmp: Path) -> Path:
    return _gan_config(tmp, "preset: tiny\ndata: " + "[" * 5000 + "]" * 5000 + "\n")


def _escaping_list(tmp: Path, entry: str | None = None) -> Path:
    """A list in ``tmp/sub`` naming an image beside it in ``tmp`` (``../img.png``) or ``entry``."""
    Image.new("RGB", (32, 24)).save(tmp / "img.png")
    (tmp / "sub").mkdir(exist_ok=True)
    (tmp / "sub" / "list.txt").write_text(f"{entry or '../img.png'}\n")
    return tmp / "sub" / "list.txt"


def _escaping_manifest(tmp: Path) -> Path:
    """A night cache whose manifest lists a file outside the cache."""
    import json

    from dsa_plugin.night.cache import CACHE_KIND, CACHE_VERSION, MANIFEST

    cache = tmp / "cache"
    cache.mkdir(exist_ok=True)
    (cache / MANIFEST).write_text(json.dumps({
        "kind": CACHE_KIND, "version": CACHE_VERSION, "generator": "0" * 64, "ratio": 1.0, "prefix": "",
        "image_size": 362, "clahe": None, "format": "png", "amp": False, "source": "x", "complete": True,
        "count": 1, "inputs": {}, "entries": {"img": "../../../../etc/hostname"}}))
    return cache


def _offline(monkeypatch) -> None:
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution (test: offline)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)


def _how_run(tmp: Path, extra: str, gpu: str = "null") -> list[str]:
    """``dsa how-train`` on HOW's r18 recipe with an empty data folder (HOW would download) and ``extra``."""
    return ["how-train", str(_how_params(tmp, f"__template__: {_how_template()}\n"
            f"demo_train: {{data_folder: {tmp / 'data'}, exp_folder: {tmp / 'exp'}, gpu_id: {gpu}}}\n{extra}"))]


def _demo(tmp: Path, *extra: str) -> list[str]:
    return ["demo", "--quick", "--out", str(tmp / "demo"), *extra]


# ------------------------------------------------------------------------------------ the table


@dataclass
class Case:
    id: str
    argv: Callable[[Path], list[str]]  # built in tmp_path
    needle: Callable[[Path], str] | str  # must appear in the error line
    pre: Callable[[], None] | None = None
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # e.g. no network
    #: False where the problem shows only while the work runs: a bad image is found when `translate`
    #: reads it, after the cache folder and its manifest (the resume point) were written.
    writes_nothing: bool = True


def _translate(tmp: Path, *extra: str, images: Path | None = None) -> list[str]:
    src = ["--images", str(images)] if images is not None else ["--db", str(_db(tmp))]
    return ["translate", "--generator", str(_generator(tmp)), *src, "--out", str(tmp / "cache"),
            "--no-progress", "--workers", "0", "--ratio", "1", *extra]


def _evaluate(tmp: Path, *extra: str, rows: list[str] | bytes = GOOD_ROWS) -> list[str]:
    return ["evaluate", "--arch", "gem_small", "--random-init", "--device", "cpu", "--no-progress",
            "--image-size", "24", "--single-scale", "--folder", str(_folder(tmp, rows)), *extra]


def _cirtorch(tmp: Path, *extra: str, export: str | None = None) -> list[str]:
    return ["cirtorch-train", export or str(tmp / "export"), "--dsa-data-root", str(tmp / "root"), "--dsa-skip-test",
            "--dsa-no-download", "--training-dataset", "retrieval-SfM-120k", "--neg-num", "1", *extra]


def _cirtorch_db(tmp: Path, *extra: str, export: str | None = None) -> list[str]:
    _db(tmp)
    return _cirtorch(tmp, *extra, export=export)


def _how_template() -> str:
    return str(_how_root() / "examples" / "params" / "eccv20" / "train_how_r18.yml")


CASES = [
    # gan-train
    Case("gan lr negative", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), "optim.lr=-1"],
         "optim.lr"),
    Case("gan lr nan", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), "optim.lr=.nan"], "optim.lr"),
    Case("gan lr written 2e-4 in YAML",
         lambda t: ["gan-train", "--config", str(_gan_config(t, "preset: tiny\noptim: {lr: 2e-4}\n")),
                    "--out", str(t / "o")], "optim.lr"),
    Case("gan device foo", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), "--device", "foo"],
         "foo"),
    Case("gan data is a list", lambda t: ["gan-train", "--config", str(_gan_config(t, "preset: tiny\ndata: [1, 2]\n")),
                                          "--out", str(t / "o")], "data"),
    Case("gan data list then data.day",
         lambda t: ["gan-train", "--config", str(_gan_config(t, "preset: tiny\ndata: [1, 2]\n")),
                    "--out", str(t / "o"), f"data.day={t}"], "data must be a mapping"),
    Case("gan betas above 1", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), "optim.betas=[2,3]",
                                         *_gan_data(t)], "optim.betas"),
    Case("gan seed 2**70", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), f"train.seed={2 ** 70}",
                                      *_gan_data(t)], "train.seed"),
    Case("gan crop 2", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), "data.crop_size=2",
                                  "data.resize_short=2", *_gan_data(t)], "data.crop_size"),
    Case("gan config nested 5000 deep", lambda t: ["gan-train", "--config", str(_deep_yaml(t)), "--out", str(t / "o")],
         "nested too deeply"),
    Case("gan loss weight nan", lambda t: ["gan-train", "--config", "tiny", "--out", str(t / "o"), "loss.edge=.nan",
                                           *_gan_data(t)], "loss.edge"),
    Case("gan config not utf-8", lambda t: ["gan-train", "--config", str(_gan_config(t, b"preset: tiny\n# \xff\xfe\n")),
                                            "--out", str(t / "o")], "gan.yaml"),
    Case("gan out is a file", lambda t: ["gan-train", "--config", "tiny", "--out", str(_gan_config(t, "x")),
         *_gan_data(t)],
         "gan.yaml"),
    # translate
    Case("translate 1x1 image", lambda t: _translate(t, images=_image_list(t, (1, 1))), "img.png",
         writes_nothing=False),
    Case("translate 3x500 image", lambda t: _translate(t, images=_image_list(t, (3, 500))), "img.png",
         writes_nothing=False),
    # 4096 px > 2x the limit: Pillow's bomb error
    Case("translate decompression bomb", lambda t: _translate(t, images=_image_list(t, (64, 64))), "decompression-bomb",
         pre=lambda: setattr(Image, "MAX_IMAGE_PIXELS", 1000), writes_nothing=False),
    Case("translate device foo", lambda t: _translate(t, "--device", "foo", images=_image_list(t)), "foo"),
    Case("translate cuda without gpu", lambda t: _translate(t, "--device", "cuda", images=_image_list(t)), "cuda",
         pre=_no_cuda),
    Case("translate db qidxs out of range", lambda t: ["translate", "--generator", str(_generator(t)), "--db",
         str(_broken_db(t, lambda d: d["val"].__setitem__("qidxs", [99] * len(d["val"]["qidxs"])))),
         "--out", str(t / "c")],
         "qidxs[0] = 99"),
    Case("translate db cids not a list", lambda t: ["translate", "--generator", str(_generator(t)), "--db",
         str(_broken_db(t, lambda d: d["train"].__setitem__("cids", 5))), "--out", str(t / "c")], "cids"),
    Case("translate db train None", lambda t: ["translate", "--generator", str(_generator(t)), "--db",
         str(_broken_db(t, lambda d: d.__setitem__("train", None))), "--out", str(t / "c")], "split 'train'"),
    Case("translate db empty pkl", lambda t: ["translate", "--generator", str(_generator(t)), "--db",
         str(_gan_config(t, b"")), "--out", str(t / "c")], "gan.yaml"),
    Case("translate db text pkl", lambda t: ["translate", "--generator", str(_generator(t)), "--db",
         str(_gan_config(t, "cids,qidxs\n")), "--out", str(t / "c")], "gan.yaml"),
    Case("translate generator network_params not a dict", lambda t: ["translate", "--generator",
         str(_generator_bad_params(t)),
         "--images", str(_image_list(t)), "--out", str(t / "c"), "--no-progress"], "g_bad_params.pth"),
    Case("translate generator with NaN weights", lambda t: ["translate", "--generator", str(_nan_generator(t)),
         "--images", str(_image_list(t)), "--out", str(t / "c"), "--no-progress"], "non-finite"),
    Case("translate clahe nan", lambda t: _translate(t, "--clahe", "nan", images=_image_list(t)), "--clahe"),
    Case("translate clahe -1", lambda t: _translate(t, "--clahe", "-1", images=_image_list(t)), "--clahe"),
    Case("translate int64 generator", lambda t: ["translate", "--generator", str(_int64_generator(t)),
         "--images", str(_image_list(t)), "--out", str(t / "c"), "--no-progress"], "not floating point"),
    Case("translate list entry ../", lambda t: _translate(t, images=_escaping_list(t)), "line 1"),
    Case("translate list entry absolute", lambda t: _translate(t, images=_escaping_list(t, str(t / "img.png"))),
         "line 1"),
    Case("translate manifest entry outside the cache", lambda t: (_escaping_manifest(t),
         _translate(t, images=_image_list(t)))[1], "../../../../etc/hostname"),
    # evaluate
    Case("evaluate checkpoint architecture 5",
         lambda t: ["evaluate", "--checkpoint", str(_embedding_meta(t, architecture=5)),
                    "--device", "cpu", "--folder", str(_folder(t, GOOD_ROWS)), "--no-progress"], "architecture"),
    Case("evaluate outputdim 1e9", lambda t: _evaluate(t, "--outputdim", "1000000000"), "--outputdim"),
    Case("evaluate threads -1", lambda t: _evaluate(t, "--threads", "-1"), "--threads"),
    Case("evaluate scales nan", lambda t: _evaluate(t, "--scales", "nan"), "--scales"),
    Case("evaluate labels domain nite", lambda t: _evaluate(t, rows=[*GOOD_ROWS[:3], "d.jpg,nite,p2"]), "nite"),
    Case("evaluate labels not utf-8", lambda t: _evaluate(t, rows=b"file,domain,place_id\na.jpg,d\xe9y,p1\n"),
         "labels.csv"),
    Case("evaluate labels short row", lambda t: _evaluate(t, rows=[*GOOD_ROWS, "a.jpg,day"]), "row 6"),
    Case("evaluate image size 0", lambda t: _evaluate(t, "--image-size", "0"), "--image-size"),
    Case("evaluate image size -5", lambda t: _evaluate(t, "--image-size", "-5"), "--image-size"),
    Case("evaluate image size 1", lambda t: _evaluate(t, "--image-size", "1"), "--image-size"),
    Case("evaluate clahe grid 0", lambda t: _evaluate(t, "--clahe-grid", "0"), "--clahe-grid"),
    Case("evaluate out unwritable", lambda t: _evaluate(t, "--out", str(_gan_config(t, "x")) + "/r.json"), "r.json"),
    Case("evaluate outputdim 0", lambda t: _evaluate(t, "--outputdim", "0"), "--outputdim"),
    Case("evaluate embedding with NaN weights", lambda t: ["evaluate", "--checkpoint", str(_nan_embedding(t)),
         "--device", "cpu",
         "--folder", str(_folder(t, GOOD_ROWS)), "--no-progress"], "embed_nan.pth"),
    Case("evaluate text whitening", lambda t: _evaluate(t, "--whitening", str(_gan_config(t, "m,P\n"))), "gan.yaml"),
    # cirtorch-train
    Case("cirtorch broken db", lambda t: (_broken_db(t, lambda d: d["train"].__setitem__("pidxs",
         [-1] * len(d["train"]["qidxs"]))),
                                         _cirtorch(t))[1], "pidxs[0] = -1", pre=_needs_cirtorch),
    Case("cirtorch neg-num above clusters", lambda t: (_db(t), _cirtorch(t, "--neg-num", "50"))[1], "--neg-num 50",
         pre=_needs_cirtorch),
    Case("cirtorch dsa-device cuda:0", lambda t: (_db(t), _cirtorch(t, "--dsa-device", "cuda:0", "--dsa-clahe"))[1],
         "cuda",
         pre=lambda: (_needs_cirtorch(), _no_cuda())),
    *[Case(f"cirtorch {flag} {value}", lambda t, f=flag, v=value: _cirtorch_db(t, f, v), flag, pre=_needs_cirtorch)
      for flag, value in (("--lr", "-1"), ("--lr", "nan"), ("--batch-size", "0"), ("--query-size", "0"),
                          ("--pool-size", "0"), ("--image-size", "0"), ("--update-every", "0"), ("--epochs", "-1"),
                          ("--arch", "get_model"))],
    Case("cirtorch EXPORT_DIR a file", lambda t: _cirtorch_db(t, export=str(_gan_config(t, "x"))), "EXPORT_DIR",
         pre=_needs_cirtorch),
    Case("cirtorch EXPORT_DIR under /proc", lambda t: _cirtorch_db(t, export="/proc/dsa-export"), "/proc",
         pre=_needs_cirtorch),
    Case("cirtorch resume payload", lambda t: _cirtorch_db(t, "--resume", str(_payload_checkpoint(t))), "payload.pth",
         pre=_needs_cirtorch),
    Case("cirtorch resume missing", lambda t: _cirtorch_db(t, "--resume", "nope.pth"), "nope.pth", pre=_needs_cirtorch),
    # how-train
    Case("how template names itself", lambda t: ["how-train", str(_how_params(t, "__template__: how.yml\n"))],
         "__template__", pre=_how_root),
    Case("how offline, validation data missing", lambda t: _how_run(t, ""), "cannot be reached", pre=_how_root,
         patch=_offline),
    Case("how dsa.device differs from HOW's", lambda t: _how_run(t, "dsa: {device: cpu}\n", gpu="0"), "dsa.device",
         pre=_how_root, patch=_offline),
    Case("how payload in validation datasets", lambda t: _how_run(t, "validation: {global_descriptor: {frequency: 1, "
         f"datasets: [{_payload_pickle(t)}]}}}}\n"), "evil.pkl", pre=_how_root, patch=_offline),
    # demo
    Case("demo cuda without gpu", lambda t: _demo(t, "--device", "cuda"), "cuda", pre=_no_cuda),
    Case("demo out a file", lambda t: ["demo", "--quick", "--out", str(_gan_config(t, "x"))], "gan.yaml"),
    Case("demo out under /proc", lambda t: ["demo", "--quick", "--out", "/proc/dsa-demo"], "/proc"),
    *[Case(f"demo seeds {value!r}", lambda t, v=value: _demo(t, "--seeds", v), "--seeds")
      for value in ("", "-1", "0,0")],
    Case("demo jobs 1000", lambda t: _demo(t, "--jobs", "1000"), "--jobs"),
    Case("demo set unknown key", lambda t: _demo(t, "--set", "gan_rate=1"), "gan_rate"),
    Case("demo set bad value", lambda t: _demo(t, "--set", "gan_iterations=1.5"), "gan_iterations takes int"),
    Case("demo set without =", lambda t: _demo(t, "--set", "gan_lr"), "KEY=VALUE"),
    Case("demo set nan in a tuple", lambda t: _demo(t, "--set", "eval_scales=1,nan"), "eval_scales takes tuple[float"),
    Case("demo set a flagged key", lambda t: _demo(t, "--set", "seeds=0,1"), "use --seeds"),
    Case("how yaml syntax error", lambda t: ["how-train", str(_how_params(t, "demo_train: [unclosed\n"))], "how.yml",
         pre=_how_root),
    Case("how bad template", lambda t: ["how-train", str(_how_params(t, f"__template__: {t / 'nope.yml'}\n"))],
         "nope.yml",
         pre=_how_root),
    Case("how generator URL unreachable", lambda t: ["how-train", str(_how_params(t,
         f"__template__: {_how_template()}\n"
         f"demo_train: {{data_folder: {t / 'data'}, exp_folder: {t / 'exp'}, gpu_id: null}}\n"
         "dsa: {generator: 'http://127.0.0.1:9/no-such-generator.pth'}\n"))], "no-such-generator.pth", pre=_how_root),
    Case("how qpool_size below qsize", lambda t: ["how-train", str(_how_params(t, f"__template__: {_how_template()}\n"
         f"demo_train: {{data_folder: {t / 'data'}, exp_folder: {t / 'exp'}, gpu_id: null}}\n"
         "training: {dataset: {qsize: 100}}\ndsa: {diverse_anchors: true, qpool_size: 10}\n"))], "qpool_size (10)",
             pre=_how_root),
    Case("how bad generator", lambda t: ["how-train", str(_how_params(t, f"__template__: {_how_template()}\n"
         f"demo_train: {{data_folder: {t / 'data'}, exp_folder: {t / 'exp'}, gpu_id: null}}\n"
         f"dsa: {{generator: {_gan_config(t, 'not a checkpoint')}}}\n"))], "gan.yaml", pre=_how_root),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the case
    if case.pre is not None:
        case.pre()
    if case.patch is not None:
        case.patch(monkeypatch)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # a default output folder would land here
    argv = case.argv(tmp_path)
    needle = case.needle(tmp_path) if callable(case.needle) else case.needle
    before = sorted(tmp_path.rglob("*"))
    try:
        code = dsa_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert needle in errors[0], err
    if case.writes_nothing:
        assert sorted(tmp_path.rglob("*")) == before, "the refused command wrote files"
    assert not (tmp_path / MARKER).exists()
