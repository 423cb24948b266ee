"""dsa_plugin.core.files: atomic writes leave the old file or the complete new one, never a partial or temp file."""

import os
import stat

import pytest

from dsa_plugin.core.files import atomic_write, atomic_write_bytes, atomic_write_text, remove_stale_temps


def test_writes_bytes_and_text_creating_parents(tmp_path):
    path = atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert path == tmp_path / "a" / "b.bin" and path.read_bytes() == b"\x00\x01"
    atomic_write_text(path, "nuit\n")
    assert path.read_bytes() == "nuit\n".encode("utf-8")
    assert os.listdir(path.parent) == ["b.bin"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_text(path, "old")

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_follow_umask_like_open(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "db.pkl", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_stale_temps_of_killed_writers_are_removed(tmp_path):
    atomic_write_text(tmp_path / "kept.pth", "x")
    stale = tmp_path / ".generator_X_epoch_03.pth.50f6892c.tmp"  # what a SIGKILLed save leaves
    stale.write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pth", "notes.tmp"]
    assert remove_stale_temps(tmp_path / "missing") == []
