"""What `resume` and `retry` change of a run (submission/overrides.py), and the --out they take back."""

from __future__ import annotations

from dataclasses import replace

import pytest
from runkit import invoke, make_run

from hpc_marker.submission.overrides import ResumeOverrides, apply_overrides, busiest
from hpc_marker.submission.request import LaunchError


class Cluster:
    """An executor that knows partitions gpu and a100 (as the Slurm executor checks them)."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def check_resources(self, partition, gpus):
        self.asked.append((partition, gpus))
        if partition not in (None, "gpu", "a100"):
            raise LaunchError(f"--partition {partition}: no such partition")
        return partition or "gpu"


@pytest.fixture
def record(tmp_path, sample_pdfs):
    return make_run(sample_pdfs, tmp_path / "out", gpus=4, register=False).record


def test_no_overrides_leave_the_record_as_it_is(record):
    assert apply_overrides(record, ResumeOverrides(), Cluster()) is record


def test_a_profile_brings_its_settings_and_explicit_options_win(record):
    cluster = Cluster()
    changed = apply_overrides(record, ResumeOverrides(profile="a100-account", time_limit="2:00:00"), cluster)
    assert (changed.profile, changed.partition, changed.cpus_per_task, changed.mem, changed.time_limit) == (
        "a100-account",
        "a100",
        8,
        "64G",
        "2:00:00",
    )
    assert changed.job_settings.gres == "gpu:a100:1" and changed.job_settings.account == "CHANGE-ME"
    assert cluster.asked == [("a100", record.gpus)]  # the partition is checked as submit checks it
    assert record.partition != "a100"  # the record itself is not changed


def test_a_partition_is_checked_and_gpus_bound_the_tasks(record):
    with pytest.raises(LaunchError, match="--partition nosuch: no such partition"):
        apply_overrides(record, ResumeOverrides(partition="nosuch"), Cluster())
    assert apply_overrides(record, ResumeOverrides(partition="a100", gpus=2), Cluster()).gpus == 2
    with pytest.raises(LaunchError, match="does not steal"):
        apply_overrides(replace(record, steal=False), ResumeOverrides(gpus=1), Cluster())
    assert busiest({0: 5, 1: 9, 2: 1, 3: 9}, 2) == [1, 3] and busiest({0: 5, 2: 1}, None) == [0, 2]


def test_resume_of_another_run_of_a_busy_out_is_refused(tmp_path, sample_pdfs):
    out = tmp_path / "out"
    make_run(sample_pdfs, out, run_id="first")  # holds --out: being submitted
    make_run(sample_pdfs, out, run_id="second", force_concurrent=True)
    refused = invoke("resume", "second")
    assert refused.exit_code == 2 and "run first is still active there" in refused.output, refused.output


def test_status_watch_left_with_ctrl_c_exits_130(tmp_path, sample_pdfs, monkeypatch):
    from hpc_marker.manage import statustable

    make_run(sample_pdfs, tmp_path / "out", run_id="watched")

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(statustable, "watch_status", interrupted)
    assert invoke("status", "watched", "--watch").exit_code == 130
