"""A process that reads the commit logs again and again (a waiting `submit`'s progress line, the collector's passes)
opens each log once (runstate/progress.py: logs_kept_open): later reads go through the open file, see every line
appended since, and make no metadata operation."""

from __future__ import annotations

import builtins

from hpc_marker.runstate.progress import CommitLog, close_logs, failed_commits, logs_kept_open, read_commits


def test_each_log_is_opened_once_and_read_again_with_what_was_appended(tmp_path, monkeypatch):
    logs = {task: CommitLog(tmp_path, task) for task in (0, 1)}
    logs[0].append("a", "ok", 1, 0, 1.0, 2.0)
    logs[1].append("b", "failed", 2, 1, 1.0, 2.0)
    opened: list[str] = []
    real_open = builtins.open

    def counted(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counted)
    kept: dict = {}
    with logs_kept_open(kept):
        assert sorted(read_commits(tmp_path)["item_id"]) == ["a", "b"]
        failed, _ = failed_commits(tmp_path)  # Arrow's reader leaves the kept file open
        assert failed["item_id"].tolist() == ["b"]
    logs[0].append("c", "ok", 1, 0, 2.0, 3.0)
    with logs_kept_open(kept):
        assert sorted(read_commits(tmp_path)["item_id"]) == ["a", "b", "c"]
    assert sorted(opened) == sorted(str(tmp_path / f"task-{t}.log") for t in (0, 1))  # once each
    close_logs(kept)
    assert kept == {}
    read_commits(tmp_path)  # without: opened on each read, as before
    assert len(opened) == 4
