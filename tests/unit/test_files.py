"""generator/files.py: one atomic write for the lock, the SBOMs and the build records."""

from __future__ import annotations

import os

import pytest

from generator.files import write_text_atomic


def test_writes_only_a_change_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "gen.lock"
    assert write_text_atomic(path, "one\n") is True
    before = path.stat().st_mtime_ns
    assert write_text_atomic(path, "one\n") is False and path.stat().st_mtime_ns == before
    assert write_text_atomic(path, "two\n", mode=0o600) is True
    assert path.read_text() == "two\n" and (path.stat().st_mode & 0o777) == 0o600
    assert sorted(os.listdir(path.parent)) == ["gen.lock"]


def test_a_failed_write_keeps_the_old_text_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    path.write_text("old\n")

    def refuse(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["record.json"]
