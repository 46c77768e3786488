"""Pending reasons that will not clear: a job that pends for one of these waits forever (or until an
admin acts), however long the user waits. Pure: squeue's %r word in, one line out.

DependencyNeverSatisfied is wedge.py's (the run's own jobs wait on each other); these are the
request's own: more than the partition or an association allows, a constraint no node has.
"""

from __future__ import annotations

# squeue %r -> why it never clears, in the user's words
NEVER_CLEARS = {
    "PartitionConfig": "the partition can never run this request (more CPUs, memory or GPUs per node "
    "than its nodes have, or a setting it does not allow)",
    "PartitionNodeLimit": "the request needs more nodes than the partition allows",
    "PartitionTimeLimit": "--time is longer than the partition's MaxTime",
    "BadConstraints": "no node has the features the request asks for (--constraint)",
    "InvalidAccount": "the account is not valid for this user or partition",
    "InvalidQOS": "the QOS is not valid for this user or partition",
    "QOSMaxWallDurationPerJobLimit": "--time is longer than the QOS allows",
    "AssocMaxWallDurationPerJobLimit": "--time is longer than your association allows",
    "QOSMaxCpuPerJobLimit": "more CPUs per job than the QOS allows",
    "AssocMaxCpuPerJobLimit": "more CPUs per job than your association allows",
    "QOSMaxMemoryPerJob": "more memory per job than the QOS allows",
    "QOSMaxGRESPerJob": "more GPUs per job than the QOS allows",
    "AssocMaxGRESPerJob": "more GPUs per job than your association allows",
}
# may clear when an admin brings nodes back; often it is a request no node can ever hold
MAY_NEVER_CLEAR = {
    "ReqNodeNotAvail": "no node it could run on is available (down, drained or reserved), or none can hold it",
}


def reason_word(reason: str) -> str:
    """squeue's %r may add details: 'ReqNodeNotAvail, UnavailableNodes:vm' -> 'ReqNodeNotAvail'."""
    return reason.split(",", 1)[0].strip()


def stuck_reason(reason: str) -> str | None:
    """Why a job pending with `reason` will not start by waiting, or None when waiting may do. Pure."""
    word = reason_word(reason)
    return NEVER_CLEARS.get(word) or MAY_NEVER_CLEAR.get(word)
