"""The pure parts of the throughput work: the concurrency budget, the front's fair gate, bearer
authorization and the per-server allowlists, per-replica metrics and the bound a run is on."""

from __future__ import annotations

import threading
import time

import pytest

from hpc_marker.llm.budget import FILL, front_capacity, grown_budget, plan_budget
from hpc_marker.llm.gate import FairGate
from hpc_marker.llm.metrics import combine, summarize_metrics, throughput_bound
from hpc_marker.llm.rules import ALLOWED_VLLM, authorize, bearer_token
from hpc_marker.llm.settings import LlmPaths, LlmSettings

SECRET = "budget-test-secret-0123456789abcdefghijklmnop"


def test_budget_fills_the_servers_twice_over_and_never_times_out_a_queued_request():
    # 64 tasks x 4 workers at one server running 4: marker's 3 each would be 768 in flight
    crowded = plan_budget(parallel=4, replicas=1, tasks=64, workers=4, request_timeout_s=600)
    assert crowded.max_concurrency == 1 and crowded.in_flight == 256
    assert crowded.timeout_s == (256 // 4 + 1) * 600  # 64 turns at the front, then its own request
    # 4 tasks x 4 workers at two vLLM replicas running 256 each: marker's 3 each would leave them idle
    sparse = plan_budget(parallel=256, replicas=2, tasks=4, workers=4, request_timeout_s=600)
    assert sparse.capacity == 512 and sparse.max_concurrency == 64 and sparse.in_flight == 1024
    assert sparse.timeout_s == 3 * 600 and sparse.max_retries == 1
    mid = plan_budget(parallel=8, replicas=2, tasks=4, workers=2, request_timeout_s=100)
    assert (mid.max_concurrency, mid.in_flight, mid.timeout_s) == (4, 32, 300)
    kept = plan_budget(parallel=8, replicas=2, tasks=4, workers=2, request_timeout_s=100, per_worker=3)
    assert kept.max_concurrency == 3 and kept.timeout_s == 100 * (2 + 1)
    assert "8 workers x 4 requests in flight = 32 for 16 server slots" in mid.describe()
    throttled = plan_budget(parallel=4, replicas=1, tasks=64, workers=4, request_timeout_s=600, max_running=1)
    assert (throttled.clients, throttled.max_concurrency) == (4, 2)  # --max-running 1: one task's workers at once
    assert [front_capacity(p) for p in (1, 4, 8, 64)] == [2, 5, 9, 72]


@pytest.mark.parametrize(
    ("parallel", "replicas", "tasks", "grown", "workers", "max_running"),
    [
        (4, 1, 4, 4, 2, None),
        (16, 1, 4, 12, 4, None),
        (256, 2, 4, 4, 4, None),
        (4, 1, 64, 8, 4, 8),
        (8, 2, 2, 1, 1, None),
    ],
)
def test_grown_tasks_stay_within_the_budget_beside_the_plans_tasks(
    parallel, replicas, tasks, grown, workers, max_running
):
    # the plan's tasks started before the growth keep their share; the grown ones take what is left, at least 1
    plan = plan_budget(parallel, replicas, tasks, workers, 600, max_running=max_running)
    mine = grown_budget(parallel, replicas, tasks, grown, workers, 600, max_running=max_running)
    total = plan.in_flight + grown * workers * mine.max_concurrency
    assert mine.in_flight == total  # what this grown task's timeout counts: every request in flight
    clients = plan.clients + grown * workers
    assert total < FILL * plan.capacity + clients  # the docs' rounding: ceil, and at least 1 per worker
    assert mine.timeout_s == (-(-total // plan.capacity) + 1) * 600
    # a task of the plan that starts after the growth counts the grown tasks: a smaller share, never larger
    later = plan_budget(parallel, replicas, tasks, workers, 600, max_running=max_running, grown=grown)
    assert later.clients == clients and later.max_concurrency <= plan.max_concurrency
    assert "of the other tasks + " in mine.describe()


def test_a_grown_task_shares_what_a_user_capped_plan_leaves_and_keeps_a_users_own_setting():
    # the plan's 2 tasks x 1 worker at 64 slots take 64 each (MAX_PER_WORKER): 128 of 128; nothing left
    assert grown_budget(64, 1, 2, 2, 1, 600).max_concurrency == 1
    # 1 task x 2 workers capped at 64 each of 256: 128 left for 3 grown tasks of 2 workers: 21 each
    assert grown_budget(128, 1, 1, 3, 2, 600).max_concurrency == 21
    # 4 tasks x 4 workers x 2 fill 32 of 16 slots twice over; 12 grown tasks taking the plan's 2 each (as before)
    # would send 128 at once, above 32 + one per worker (96); they take 1 each: 80
    assert plan_budget(16, 1, 4, 4, 600).max_concurrency == 2
    assert grown_budget(16, 1, 4, 12, 4, 600).in_flight == 32 + 12 * 4 * 1
    kept = grown_budget(4, 1, 4, 4, 2, 600, per_worker=3)  # --llm-concurrency: as given, for every task
    assert kept.max_concurrency == 3 and kept.in_flight == 4 * 2 * 3 + 4 * 2 * 3


def test_gate_serves_the_task_with_fewest_slots_first_and_drops_who_left():
    gate = FairGate(capacity=1, poll_s=0.05)
    assert gate.acquire("a")  # a holds the only slot
    order: list[str] = []
    left = threading.Event()

    def wait(key: str, abandoned=None) -> None:
        if gate.acquire(key, abandoned):
            order.append(key)
            time.sleep(0.05)
            gate.release(key)

    threads = []
    for key in ("a", "a", "a", "b", "c"):  # a queues three, b and c one each, in this order
        threads.append(threading.Thread(target=wait, args=(key,)))
        threads[-1].start()
        time.sleep(0.02)
    quitter = threading.Thread(target=wait, args=("d", left.is_set))
    quitter.start()
    time.sleep(0.05)
    assert gate.queued == 6 and gate.held == 1
    left.set()  # d's client goes away while queued
    time.sleep(0.15)
    assert gate.queued == 5
    gate.release("a")
    for thread in [*threads, quitter]:
        thread.join(timeout=5)
    # b and c (never served) before a's second and third; d never got a slot
    assert order == ["b", "c", "a", "a", "a"]
    assert gate.held == 0 and gate.queued == 0


def test_gate_bounds_what_is_in_flight_and_none_lets_all_through():
    gate, peak, lock, busy = FairGate(capacity=3, poll_s=0.05), [0], threading.Lock(), [0]

    def call(key: str) -> None:
        assert gate.acquire(key)
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(0.03)
        with lock:
            busy[0] -= 1
        gate.release(key)

    threads = [threading.Thread(target=call, args=(f"t{i % 5}",)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert peak[0] == 3 and gate.held == 0
    assert all(FairGate(None).acquire("x") for _ in range(100))
    with pytest.raises(ValueError):
        FairGate(0)


def test_the_secret_as_a_bearer_token_and_the_vllm_allowlist():
    assert (
        bearer_token(f"Bearer {SECRET}") == SECRET and bearer_token("Basic abc") is None and bearer_token(None) is None
    )
    ok = authorize("POST", "/task/4.77/v1/chat/completions", SECRET, ALLOWED_VLLM, bearer=SECRET)
    assert (ok.action, ok.task, ok.upstream_path) == ("forward", "4.77", "/v1/chat/completions")
    assert authorize("POST", "/v1/chat/completions", SECRET, ALLOWED_VLLM, bearer=SECRET[:-1]).status == 403
    assert authorize("POST", "/v1/chat/completions", SECRET, ALLOWED_VLLM, bearer=None).status == 403
    assert authorize("POST", "/v1/chat/completions", "", ALLOWED_VLLM, bearer="").status == 403
    assert authorize("GET", "/_hpcmarker/stats", SECRET, ALLOWED_VLLM, bearer=SECRET).action == "stats"
    for path in (
        "/tokenize",
        "/detokenize",
        "/metrics",
        "/v1/load_lora_adapter",
        "/v1/embeddings",
        "/pooling",
        "/api/generate",
        "/api/pull",
        "/health",
        "/v1/chat/completions/../../tokenize",
    ):
        assert authorize("POST", path, SECRET, ALLOWED_VLLM, bearer=SECRET).status in (403, 405), path
        assert authorize("POST", f"/{SECRET}{path}", SECRET, ALLOWED_VLLM).status in (403, 405), path
    assert authorize("GET", f"/{SECRET}/v1/models", SECRET, ALLOWED_VLLM).action == "forward"


def test_vllm_flags_come_from_the_settings():
    settings = LlmSettings(
        model="Qwen/Qwen2.5-7B-Instruct",
        server="vllm",
        parallel=64,
        gpus=2,
        ctx=8192,
        options={
            "enforce_eager": True,
            "gpu-memory-utilization": 0.85,
            "quantization": "fp8",
            "trust-remote-code": False,
        },
        server_args=["--max-num-seqs", "32"],
    )
    assert settings.vllm_flags() == [
        "--max-num-seqs",
        "64",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "8192",
        "--enforce-eager",
        "--gpu-memory-utilization",
        "0.85",
        "--quantization",
        "fp8",
        "--max-num-seqs",
        "32",
    ]
    assert LlmSettings(model="m", server="vllm").vllm_flags() == ["--max-num-seqs", "1"]


def test_replica_files_keep_replica_zero_where_it_was(tmp_path):
    zero, two = LlmPaths(tmp_path), LlmPaths(tmp_path, 2)
    assert (zero.endpoint.name, zero.secret.name, zero.metrics.name) == ("endpoint.json", "secret", "metrics.jsonl")
    assert (two.endpoint.name, two.secret.name, two.metrics.name) == ("endpoint-2.json", "secret-2", "metrics-2.jsonl")
    assert two.server_log("vllm").name == "vllm-2.log" and zero.server_log("ollama").name == "ollama.log"
    assert [p.replica for p in zero.all_replicas(3)] == [0, 1, 2]


def _lines(start: float, count: int, per_line: int, capacity: int, queued: int, task: str) -> list[dict]:
    return [
        {
            "ts": start + 5 * i,
            "interval_s": 5.0,
            "in_flight": capacity if queued else 1,
            "queued": queued,
            "capacity": capacity,
            "denied": 0,
            "tokens_out_per_s": per_line / 5,
            "tasks": {
                task: {
                    "requests": i + 1,
                    "failures": 0,
                    "timeouts": 0,
                    "client_errors": 0,
                    "tokens_in": 0,
                    "tokens_out": per_line * (i + 1),
                    "failovers": 0,
                    "abandoned": 0,
                }
            },
        }
        for i in range(count)
    ]


def test_replicas_add_up_and_the_bound_follows_the_queue():
    busy = summarize_metrics(_lines(1000.0, 12, 500, capacity=5, queued=3, task="0.11"))
    idle = summarize_metrics(_lines(1000.0, 12, 100, capacity=5, queued=0, task="1.22"))
    run = combine({0: busy, 1: idle})
    assert run["requests"] == 24 and run["tokens_out"] == 500 * 12 + 100 * 12
    assert [r["replica"] for r in run["replicas"]] == [0, 1]
    assert run["replicas"][0]["full_share"] == 1.0 and run["replicas"][1]["full_share"] == 0.0
    assert set(run["tasks"]) == {"0", "1"} and run["peak_queued"] == 3
    assert run["timeline"][-1]["tokens_out_per_s"] == 120.0  # both replicas' last rates added up
    bound = throughput_bound(run, pages_done=100, pages_per_second=2.0)
    assert bound["bound"] == "llm" and bound["full_share"] == 0.5 and bound["tokens_per_page"] == 72.0
    assert "LLM-bound" in bound["why"] and "--llm-replicas" in bound["why"]
    calm = throughput_bound(combine({0: idle}), pages_done=100, pages_per_second=2.0)
    assert calm["bound"] == "conversion" and "conversion-bound" in calm["why"]
    assert calm["llm_pages_per_s"] == pytest.approx(20.0 / 12.0, abs=0.01)
    assert throughput_bound(None, 10, 1.0) is None and combine({}) is None
    full = _lines(1000.0, 12, 500, capacity=5, queued=3, task="0.11")
    tail = [
        dict(full[-1], ts=full[-1]["ts"] + 5 * (k + 1), in_flight=1, queued=0, tokens_out_per_s=0.0) for k in range(12)
    ]  # the last tasks finishing: free slots, nothing new
    ending = summarize_metrics(full + tail)
    assert ending["full_share"] == 0.0 and ending["run_full_share"] == 0.5
    assert throughput_bound(ending, 100, 1.0)["bound"] == "conversion"  # status: the last minute
    finished = throughput_bound(ending, 100, 1.0, whole_run=True)  # the collector: the whole run
    assert finished["bound"] == "llm" and "full 50% of the run" in finished["why"]
    assert combine({0: ending, 1: idle})["run_full_share"] == 0.25
