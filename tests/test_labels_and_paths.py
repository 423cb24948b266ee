"""Paths stay inside their roots (labels.csv rows, db cids, gnd image names); BOM/CRLF labels work."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsa_plugin.data.sfm import SfMFormatError, load_sfm_db
from dsa_plugin.evaluation.datasets import TestSetError, load_folder_dataset, load_test_set

HEADER = "file,domain,place_id,role"


def _folder(tmp_path: Path, rows: list[str], encoding: str = "utf-8", newline: str = "\n") -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_bytes(newline.join([HEADER, *rows, ""]).encode(encoding))
    return tmp_path


GOOD = ["a.jpg,day,p1,eval", "b.jpg,night,p1,eval", "c.jpg,day,p2,eval", "d.jpg,night,p2,eval"]


@pytest.mark.parametrize("encoding, newline", [("utf-8", "\n"), ("utf-8-sig", "\r\n"), ("utf-8-sig", "\n")])
def test_bom_and_crlf_simply_work(tmp_path, encoding, newline):
    ds = load_folder_dataset(_folder(tmp_path, GOOD, encoding, newline), role="eval")
    assert [Path(f).name for f in ds.files] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert ds.places == ["p1", "p1", "p2", "p2"] and ds.domains == ["day", "night", "day", "night"]


@pytest.mark.parametrize("bad, message", [
    ("../../x.jpg,day,p3,eval", r"row 6: file '\.\./\.\./x\.jpg' is outside the folder"),
    ("/etc/passwd,day,p3,eval", r"row 6: file '/etc/passwd' is outside the folder"),
    ("sub/../../a.jpg,day,p3,eval", r"row 6: .* is outside the folder"),
    ("a.jpg,day,p3,eval", r"row 6 lists 'a\.jpg' again \(first in row 2\)"),
    ("./b.jpg,day,p3,eval", r"row 6 lists '\./b\.jpg' again \(first in row 3\)"),
    ("c.jpg,day", r"row 6 has 2 value\(s\) but the header has 4"),
    ("d.jpg,,p3,eval", r"row 6 has empty \['domain'\]"),
])
def test_bad_rows_are_refused_with_the_row_number(tmp_path, bad, message):
    folder = _folder(tmp_path, [*GOOD, bad])
    with pytest.raises(TestSetError, match=message) as exc:
        load_folder_dataset(folder)
    assert "labels.csv" in str(exc.value) and "\n" not in str(exc.value)


def test_row_numbers_count_from_the_header_even_with_a_role_filter(tmp_path):
    folder = _folder(tmp_path, ["a.jpg,day,p1,train", "../x.jpg,day,p1,eval"])
    with pytest.raises(TestSetError, match="row 3: file"):
        load_folder_dataset(folder, role="train")


def test_non_utf8_labels_is_one_clear_error(tmp_path):
    folder = _folder(tmp_path, GOOD)
    (folder / "labels.csv").write_bytes(HEADER.encode() + b"\na.jpg,d\xe9y,p1,eval\n")
    with pytest.raises(TestSetError, match=r"labels\.csv: not UTF-8 text \(byte 0xe9"):
        load_folder_dataset(folder)


def test_single_place_warns_that_map_means_nothing(tmp_path):
    ds = load_folder_dataset(_folder(tmp_path, GOOD[:2]))
    with pytest.warns(UserWarning, match="one place"):
        ds.split("night", "day")


def _db(tmp_path: Path, cids: list) -> Path:
    pkl = tmp_path / "db.pkl"
    part = {"cids": cids, "cluster": [0] * len(cids), "qidxs": [0], "pidxs": [len(cids) - 1]}
    pkl.write_bytes(pickle.dumps({"train": part, "val": part}))
    return pkl


@pytest.mark.parametrize("cid, message", [
    ("/etc/passwd", r"cids\[1\]: cid '/etc/passwd' is not a plain file name"),
    ("../../../x", r"cids\[1\]: .* is not a plain file name"),
    ("......", r"cids\[1\]: cid '\.\.\.\.\.\.' resolves outside the image folder"),
    ("..", r"cids\[1\]: cid '\.\.' resolves outside"),
    ("", r"cids\[1\]: cid must be a non-empty string"),
    (7, r"cids\[1\]: cid must be a non-empty string, got 7"),
])
def test_db_cids_must_stay_inside_ims(tmp_path, cid, message):
    with pytest.raises(SfMFormatError, match=message):
        load_sfm_db(_db(tmp_path, ["0" * 32, cid]), "train")


@pytest.mark.parametrize("key, value, message", [
    ("qidxs", [-1], r"qidxs\[0\] = -1 is outside 0\.\.1"),
    ("pidxs", [2], r"pidxs\[0\] = 2 is outside 0\.\.1"),
    ("qidxs", ["0"], r"qidxs\[0\] must be an integer, got '0'"),
    ("qidxs", [0, 1], r"2 qidxs but 1 pidxs"),
    ("cids", None, r"'cids' must be a list of strings, got NoneType"),
])
def test_db_fields_are_checked(tmp_path, key, value, message):
    part = {"cids": ["0" * 32, "1" * 32], "cluster": [0, 0], "qidxs": [0], "pidxs": [1]}
    part[key] = value
    pkl = tmp_path / "db.pkl"
    pkl.write_bytes(pickle.dumps({"train": part, "val": part}))
    with pytest.raises(SfMFormatError, match=message):
        load_sfm_db(pkl, "train")


def test_db_split_that_is_not_a_dict(tmp_path):
    pkl = tmp_path / "db.pkl"
    pkl.write_bytes(pickle.dumps({"train": None, "val": None}))
    with pytest.raises(SfMFormatError, match=r"split 'train' must be a dict"):
        load_sfm_db(pkl, "train")


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd"])
def test_gnd_image_names_stay_inside_jpg(tmp_path, name):
    base = tmp_path / "test" / "oxford5k"
    (base / "jpg").mkdir(parents=True)
    gnd = {"imlist": ["a", name], "qimlist": ["a"], "gnd": [{"ok": np.array([0]), "junk": np.array([], int)}]}
    (base / "gnd_oxford5k.pkl").write_bytes(pickle.dumps(gnd))
    with pytest.raises(TestSetError, match=r"imlist\[1\] = .* is not an image name inside"):
        load_test_set("oxford5k", tmp_path, check_images=False)
