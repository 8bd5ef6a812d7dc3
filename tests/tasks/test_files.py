"""tasks/files.py: the one atomic write behind documents and inbound letters."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.files import keep_once, write_atomically


def test_write_creates_the_folder_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    final = tmp_path / "ab" / "abcdef"
    write_atomically(final, b"%PDF-1.4 first")
    assert final.read_bytes() == b"%PDF-1.4 first"
    assert sorted(p.name for p in final.parent.iterdir()) == ["abcdef"]


def test_a_failed_rename_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "ab" / "abcdef"

    def refuse(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(final, b"data")
    assert list(final.parent.iterdir()) == []


def test_keep_once_leaves_a_kept_file_as_it_is(tmp_path: Path) -> None:
    final = tmp_path / "ab" / "abcdef"
    keep_once(final, b"first")
    keep_once(final, b"second")
    assert final.read_bytes() == b"first"
    write_atomically(final, b"second")
    assert final.read_bytes() == b"second"
