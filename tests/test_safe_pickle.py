"""No code runs from any pickle we read: db, whitening and ground-truth files, through every CLI.

Each payload would create a marker file when unpickled with plain ``pickle.load`` (checked once
below, so these tests can fail); every position must refuse it with exit status 2, one error line
naming the file, no traceback, and no marker.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dsa_plugin.cli import main as dsa_main
from dsa_plugin.core.safe_pickle import PickleFileError, UnsafePickleError, load_pickle
from dsa_plugin.data.sfm import SfMFormatError, db_paths, load_sfm_db


class _SystemPayload:
    """Unpickles to ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _ExecPayload:
    """Unpickles to ``exec(...)`` writing the marker: builtins are not allowed wholesale either."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil(path: Path, marker: Path, payload: type = _SystemPayload, wrap=lambda p: p) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(wrap(payload(marker)), f)
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """``dsa <argv>`` in-process: (exit status, stderr). An uncaught exception fails the test."""
    try:
        code = dsa_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, marker: Path, names: str) -> None:
    assert not marker.exists(), "the payload ran"
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and names in lines[0] and "refusing to unpickle" in lines[0], err


def test_the_payload_is_live(tmp_path):
    """Plain pickle.load runs it: the marker appears (so the refusals below mean something)."""
    marker = tmp_path / "marker"
    with open(_evil(tmp_path / "x.pkl", marker), "rb") as f:
        pickle.load(f)  # deliberately, on our own payload
    assert marker.exists()


@pytest.mark.parametrize("payload", [_SystemPayload, _ExecPayload])
def test_load_pickle_refuses_globals(tmp_path, payload):
    marker = tmp_path / "marker"
    path = _evil(tmp_path / "evil.pkl", marker, payload, wrap=lambda p: {"train": {"cids": [p]}})
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to unpickle global"):
        load_pickle(path)
    assert not marker.exists()


def test_load_pickle_keeps_plain_data(tmp_path):
    data = {"cids": ["a", "b"], "qidxs": [0], "m": np.arange(3.0)[:, None], "t": (1, 2.5, None, True), "s": {1}}
    path = tmp_path / "ok.pkl"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_pickle(path)
        assert back["cids"] == ["a", "b"] and back["t"] == (1, 2.5, None, True) and back["s"] == {1}
        np.testing.assert_array_equal(back["m"], data["m"])


@pytest.mark.parametrize("content, message", [
    (b"", "empty or truncated"),
    (pickle.dumps({"cids": list(range(100))})[:20], "empty or truncated"),
    (b"cids,qidxs\nabc,1\n", "not a valid pickle"),
])
def test_broken_pickles_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "db.pkl"
    path.write_bytes(content)
    with pytest.raises(PickleFileError, match=message) as exc:
        load_pickle(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_sfm_db_loader_refuses_payload(tmp_path):
    marker = tmp_path / "marker"
    pkl = _evil(tmp_path / "db.pkl", marker)
    with pytest.raises(SfMFormatError, match=r"db\.pkl: refusing to unpickle global"):
        load_sfm_db(pkl, "train")
    assert not marker.exists()


def test_translate_db(tmp_path, capsys):
    marker = tmp_path / "marker"
    pkl = _evil(tmp_path / "evil.pkl", marker)
    code, err = _run(["translate", "--generator", str(tmp_path / "g.pth"), "--db", str(pkl),
                      "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    _assert_refused(code, err, marker, "evil.pkl")


def test_translate_data_root(tmp_path, capsys):
    marker = tmp_path / "marker"
    pkl = _evil(db_paths(tmp_path / "root")[0], marker)
    code, err = _run(["translate", "--generator", str(tmp_path / "g.pth"), "--data-root", str(tmp_path / "root"),
                      "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    _assert_refused(code, err, marker, pkl.name)


def _evaluate_args() -> list[str]:
    return ["evaluate", "--arch", "gem_small", "--random-init", "--device", "cpu", "--no-progress"]


def test_evaluate_whitening(tmp_path, capsys):
    marker = tmp_path / "marker"
    pkl = _evil(tmp_path / "evil_lw.pkl", marker, wrap=lambda p: {"m": p, "P": np.eye(2)})
    code, err = _run([*_evaluate_args(), "--whitening", str(pkl), "--folder", str(tmp_path)], capsys)
    _assert_refused(code, err, marker, "evil_lw.pkl")


def test_evaluate_learn_whitening_db(tmp_path, capsys):
    marker = tmp_path / "marker"
    pkl = _evil(tmp_path / "evil-whiten.pkl", marker)
    code, err = _run([*_evaluate_args(), "--learn-whitening", str(pkl), "--folder", str(tmp_path)], capsys)
    _assert_refused(code, err, marker, "evil-whiten.pkl")


def test_evaluate_ground_truth(tmp_path, capsys):
    marker = tmp_path / "marker"
    gnd = _evil(tmp_path / "test" / "oxford5k" / "gnd_oxford5k.pkl", marker,
                wrap=lambda p: {"imlist": ["a"], "qimlist": ["a"], "gnd": [p]})
    code, err = _run([*_evaluate_args(), "--datasets", "oxford5k", "--data-root", str(tmp_path)], capsys)
    _assert_refused(code, err, marker, gnd.name)


@pytest.mark.skipif(importlib.util.find_spec("cirtorch") is None, reason="cirtorch is not installed")
@pytest.mark.parametrize("position", ["train_db", "test_gnd", "whiten_db"])
def test_cirtorch_train_data_root(tmp_path, capsys, position):
    """cirtorch itself unpickles these with plain pickle.load: we must refuse them before its main()."""
    from dsa_plugin.data import make_tiny_sfm_db

    root = tmp_path / "root"
    make_tiny_sfm_db(root, clusters=12, images_per_cluster=2)  # val: 3 clusters, enough for --neg-num 2
    marker = tmp_path / "marker"
    target = {
        "train_db": db_paths(root)[0],
        "test_gnd": root / "test" / "oxford5k" / "gnd_oxford5k.pkl",
        "whiten_db": root / "train" / "retrieval-SfM-120k" / "retrieval-SfM-120k-whiten.pkl",
    }[position]
    _evil(target, marker)
    code, err = _run(["cirtorch-train", str(tmp_path / "export"), "--dsa-data-root", str(root),
                      "--training-dataset", "retrieval-SfM-120k", "--test-datasets", "oxford5k",
                      "--test-whiten", "retrieval-SfM-120k", "--neg-num", "2"], capsys)
    _assert_refused(code, err, marker, target.name)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("position", ["train/retrieval-SfM-120k/retrieval-SfM-120k.pkl",
                                      "train/retrieval-SfM-120k/retrieval-SfM-120k-val-eccv2020.pkl",
                                      "test/roxford5k/gnd_roxford5k.pkl"])
def test_how_train_data_folder(tmp_path, capsys, position):
    """HOW and cirtorch unpickle its data folder's dbs with plain pickle.load: refused before HOW runs."""
    import yaml

    from dsa_plugin.integrations.how import locate as how_locate

    for module in ("cirtorch", "asmk", "faiss"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"HOW needs '{module}'")
    try:
        how_root = how_locate.locate_how()
    except how_locate.HOWIntegrationError as err:
        pytest.skip(str(err))
    marker = tmp_path / "marker"
    data = tmp_path / "data"
    target = _evil(data / position, marker)
    params = tmp_path / "run.yml"
    params.write_text(yaml.safe_dump({
        "__template__": str(how_root / "examples" / "params" / "eccv20" / "train_how_r18.yml"),
        "demo_train": {"data_folder": str(data), "exp_folder": str(tmp_path / "exp"), "gpu_id": None},
    }))
    code, err = _run(["how-train", str(params)], capsys)
    _assert_refused(code, err, marker, target.name)
    assert not (tmp_path / "exp").exists()


class _NumpyExecPayload:
    """Unpickles to numpy's own ``runstring`` (an ``exec``): a numpy module is not a safe module."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        from numpy.testing._private.utils import runstring

        return (runstring, (f"open({str(self.marker)!r}, 'w').write('pwned')", {}))


def test_numpy_globals_outside_the_allow_list_are_refused(tmp_path):
    """Only the listed numpy names pass, not any ``numpy.*``: numpy has exec, file and pickle loaders."""
    marker = tmp_path / "marker"
    path = _evil(tmp_path / "evil.pkl", marker, _NumpyExecPayload)
    refused = r"refusing to unpickle global numpy\.testing\._private\.utils\.runstring"
    with pytest.raises(UnsafePickleError, match=refused):
        load_pickle(path)
    assert not marker.exists()
    for module, name in (("numpy", "load"), ("numpy", "save"), ("numpy", "fromfile"), ("numpy.lib.npyio", "load"),
                         ("numpy.ctypeslib", "load_library")):
        path.write_bytes(f"c{module}\n{name}\n)R.".encode())  # GLOBAL, empty tuple, REDUCE: a call of module.name()
        with pytest.raises(UnsafePickleError, match=rf"global {module}\.{name}:"):
            load_pickle(path)


def test_python2_pickles_with_non_ascii_text_load_via_latin1(tmp_path):
    """A Python-2 db (protocol 2, a str holding byte 0xe9) fails as ASCII; latin1 reads every byte."""
    path = tmp_path / "py2.pkl"
    # {'name': 'caf\xe9', 'cids': ['a']} as Python 2 pickles it: SHORT_BINSTRING for str
    path.write_bytes(b"\x80\x02}q\x00(U\x04nameq\x01U\x04caf\xe9q\x02U\x04cidsq\x03]q\x04U\x01aq\x05au.")
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())  # Python 3's default (ASCII) cannot read it
    assert load_pickle(path) == {"name": "caf\xe9", "cids": ["a"]}
