"""util/files: a second name for a file (the collector's task logs)."""

from __future__ import annotations

import errno
import os

import pytest

from hpc_marker.util import files
from hpc_marker.util.files import link_or_copy


def test_a_link_shares_the_file_and_replaces_an_older_one(tmp_path):
    source, target = tmp_path / "7_0_0_log.out", tmp_path / "task-0.out"
    source.write_text("first\n")
    link_or_copy(source, target)
    assert os.path.samefile(source, target)
    other = tmp_path / "8_0_0_log.out"  # collected again after a resume: the newer job's log
    other.write_text("second\n")
    link_or_copy(other, target)
    assert target.read_text() == "second\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "7_0_0_log.out",
        "8_0_0_log.out",
        "task-0.out",
    ]  # no temporary name left


def test_without_hard_links_it_copies_and_a_missing_source_says_so(tmp_path, monkeypatch):
    source, target = tmp_path / "a.out", tmp_path / "b.out"
    source.write_text("log\n")

    def no_links(*_args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    link_or_copy(source, target)
    assert target.read_text() == "log\n" and not os.path.samefile(source, target)
    with pytest.raises(FileNotFoundError):
        link_or_copy(tmp_path / "never.out", tmp_path / "c.out")


def test_linking_the_same_file_again_and_again_leaves_nothing_behind(tmp_path):
    """A run collected twice (by its collector job, then by hand) links each task log again: rename() of two
    links to one file does nothing, so the temporary name must go by other means, or the third time fails."""
    source, target = tmp_path / "job.out", tmp_path / "logs" / "task-0.out"
    target.parent.mkdir()
    source.write_text("log\n")
    for _ in range(3):
        link_or_copy(source, target)
    assert target.read_text() == "log\n" and os.path.samefile(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["task-0.out"]
