"""A run's tasks as Slurm arrays (slurm/arrays.py) and the limits read from Slurm's own words (parse.py):
pure, no cluster needed."""

from __future__ import annotations

import itertools

import pytest

from hpc_marker.slurm.arrays import (
    ArrayLimitError,
    ArrayLimits,
    convert_roles,
    layout,
    running_note,
    share_throttle,
    single_array,
    split_arrays,
)
from hpc_marker.slurm.parse import (
    fold_job_ids,
    index_ranges,
    limits_enforced,
    parse_config,
    parse_squeue,
    parse_user_limits,
)
from hpc_marker.slurm.wedge import describe, find_wedge


def test_tasks_past_max_array_size_become_several_arrays_covering_every_task():
    arrays = split_arrays(list(range(10)), ArrayLimits(max_array_size=4))
    assert [a.tasks for a in arrays] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert [a.indices for a in arrays] == [(0, 1, 2, 3), (0, 1, 2, 3), (0, 1)]  # each below MaxArraySize
    assert [a.spec for a in arrays] == ["0-3", "0-3", "0-1"]
    assert convert_roles(len(arrays)) == ["convert-0", "convert-1", "convert-2"]


def test_one_array_keeps_the_task_indices_while_they_fit():
    assert [a.spec for a in split_arrays(list(range(4)), ArrayLimits(max_array_size=4))] == ["0-3"]
    resumed = split_arrays([1, 3], ArrayLimits(max_array_size=4))  # resume: some tasks, Slurm index = task
    assert [(a.tasks, a.spec) for a in resumed] == [((1, 3), "1,3")]
    high = split_arrays([2, 5, 9], ArrayLimits(max_array_size=4))  # 5 and 9 are no valid index: renumbered
    assert [(a.tasks, a.spec) for a in high] == [((2, 5, 9), "0-2")]
    assert convert_roles(1) == ["convert"]
    assert single_array([0, 1, 2], max_running=2).arrays[0].spec == "0-2%2"


def test_max_running_is_shared_between_the_arrays():
    one = split_arrays(list(range(10)), ArrayLimits(max_array_size=20), max_running=3)
    assert [a.spec for a in one] == ["0-9%3"]
    three = split_arrays(list(range(10)), ArrayLimits(max_array_size=4), max_running=5)
    assert [a.throttle for a in three] == [2, 2, 1] and [a.spec for a in three] == ["0-3%2", "0-3%2", "0-1%1"]
    unthrottled = split_arrays(list(range(10)), ArrayLimits(max_array_size=4), max_running=10)
    assert [a.throttle for a in unthrottled] == [None, None, None]  # K >= tasks throttles nothing
    with pytest.raises(ArrayLimitError, match=r"--max-running 2: 10 tasks need 3 arrays \(MaxArraySize is 4\)"):
        split_arrays(list(range(10)), ArrayLimits(max_array_size=4), max_running=2)
    with pytest.raises(ArrayLimitError, match="--max-running 0: must be at least 1"):
        split_arrays([0], ArrayLimits(), max_running=0)


@pytest.mark.parametrize("sizes", [[1001, 99], [4, 4, 2], [1001, 1001, 1001, 5], [7], [3, 1, 1]])
def test_throttle_shares_sum_to_k_and_stay_within_each_array(sizes):
    for total in range(len(sizes), sum(sizes)):
        shares = share_throttle(total, sizes)
        assert sum(shares) == total, (total, shares)
        assert all(1 <= share <= size for share, size in zip(shares, sizes, strict=False)), (total, shares)
        exact = [total * size / sum(sizes) for size in sizes]
        assert all(abs(share - x) < 1 + 1e-9 or share == 1 for share, x in zip(shares, exact, strict=False)), (
            total,
            shares,
        )


def test_more_jobs_than_max_submit_jobs_is_refused_naming_the_limit():
    limits = ArrayLimits(max_array_size=1001, max_submit_jobs=1000)
    with pytest.raises(
        ArrayLimitError,
        match=r"1,100 tasks need 1,101 jobs .* MaxSubmitJobs is 1,000: "
        r"at most 999 tasks fit now",
    ):
        split_arrays(list(range(1100)), limits, other_jobs=1)
    assert len(split_arrays(list(range(999)), limits, other_jobs=1)) == 1  # 999 tasks + collector fit
    busy = ArrayLimits(max_submit_jobs=1000, queued_jobs=998)
    with pytest.raises(ArrayLimitError, match="998 of your jobs are already queued: wait for"):
        split_arrays([0], busy, other_jobs=2)


def test_max_jobs_below_the_run_gets_a_note():
    assert running_note(1100, ArrayLimits(max_jobs=500), None).startswith("note: your MaxJobs is 500")
    assert running_note(1100, ArrayLimits(max_jobs=500), 100) is None  # --max-running is below it anyway
    assert running_note(10, ArrayLimits(), None) is None
    assert layout(list(range(8)), ArrayLimits(max_array_size=4, max_jobs=2)).note is not None


def test_limits_are_read_from_slurms_own_output():
    config = parse_config(
        "Configuration data as of 2024-01-01T00:00:00\nMaxArraySize            = 1001\n"
        "AccountingStorageEnforce = associations,limits\nSLURM_VERSION           = 22.05.8\n"
    )
    assert config["MaxArraySize"] == "1001" and limits_enforced(config["AccountingStorageEnforce"])
    assert not limits_enforced("none") and not limits_enforced("associations") and limits_enforced("safe")
    rows = "ann|proj|proj|||\nann|proj|other||10|\nann|proj|proj|gpu|8|500\n"
    assert parse_user_limits(rows, None, None) == (None, None)  # default account, no partition row
    assert parse_user_limits(rows, None, "gpu") == (8, 500)
    assert parse_user_limits(rows, "other", "gpu") == (10, None)
    assert parse_user_limits("", None, None) == (None, None)


def test_a_wedge_over_several_arrays_is_one_run():
    jobs = {"service": ["548"], "convert": ["549_0", "549_1", "550_0"], "collect": ["551"]}
    squeue = (
        "549_[0-1]|PENDING|DependencyNeverSatisfied|after:548(failed)\n"
        "550_[0]|PENDING|DependencyNeverSatisfied|after:548(failed)\n"
        "551|PENDING|Dependency|afterany:549_*(unfulfilled),afterany:550_*(unfulfilled)\n"
    )
    wedge = find_wedge(jobs, parse_squeue(squeue), {"548": "FAILED"})
    assert wedge.stuck == ("array 549", "array 550") and wedge.causes == ("service 548 FAILED",)
    assert wedge.queued == ("549_[0-1]", "550_[0]", "551")
    assert describe("r1", wedge, cancelled=True).startswith(
        "run r1 is wedged: array 549 and array 550 pending with DependencyNeverSatisfied (service 548 FAILED); "
        "cancelled array 549, array 550 and collector 551"
    )


def test_every_task_is_in_exactly_one_array():
    for count, size in itertools.product([1, 5, 1001, 1002, 2500], [1, 4, 1001]):
        arrays = split_arrays(list(range(count)), ArrayLimits(max_array_size=size))
        assert [t for a in arrays for t in a.tasks] == list(range(count))
        assert all(len(a.tasks) <= size and max(a.indices) < size for a in arrays)


def test_a_runs_job_ids_fold_into_one_short_line():
    ids = [f"298_{i}" for i in range(1001)] + [f"299_{i}" for i in range(99)] + ["300"]
    assert fold_job_ids(ids) == ["298_[0-1000]", "299_[0-98]", "300"]
    assert fold_job_ids(["5_3", "5_7", "6_0", "4242"]) == ["5_[3,7]", "6_0", "4242"]  # local runs: pids, unchanged
    assert index_ranges([0, 1]) == "0,1" and index_ranges([9, 0, 1, 2, 5, 7, 8]) == "0-2,5,7-9"
