"""Benchmark: the LLM front (llm/front.py, aiohttp) side by side with the front it replaced
(http.server + httpx, read from git at --old-ref) and with no front at all, in one run.

    .venv/bin/python benchmarks/bench_front.py [--clients 512] [--seconds 8] [--delay 0.5] [--json FILE]

Everything runs on this machine, on loopback only, each part in a process of its own:
- a stand-in OpenAI server (aiohttp, below): POST /v1/chat/completions waits --delay seconds (the
  time a real server spends generating; it costs no CPU) and answers a small chat completion with
  `usage`, or an SSE stream of 8 events, usage and `[DONE]` when the body asks for `"stream": true`;
- the front (the package's), and the old one: `git show REF:hpc_marker/llm/{front,gate,rules}.py`
  written to a temporary folder and imported from there (it is not in the package any more); both
  with the vLLM allowlist, the secret as a bearer token, a task path, and a fair gate of --clients
  slots (so the gate's bookkeeping is in the measurement, never its queue);
- the load: `wrk` (C, epoll; Debian: `apt-get install wrk`), 2 threads, --clients connections kept
  alive, for --seconds after a 2 s warm-up, with a 10 s timeout per request. Python clients top out
  near 100-220 requests/s here by themselves; wrk does not.

Three bodies: a small chat request, the same streamed (SSE), and a 1 MB one (marker sends page images
inline). For each, the stand-in directly, through the old front and through the new one: requests/s,
p50 and p99 latency, errors (connect, read, write, timeouts, non-2xx), and what the front costs of
the stand-in's own throughput (1 - through the front / direct). Bounded: 9 runs of (2 + --seconds) s.
Results: docs/llm.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
OLD_REF = "cc860a5"  # the last commit whose front ran on http.server
PATH = "/v1/chat/completions"
SCENARIOS = ("json", "sse", "1mb")
TARGETS = ("direct", "old front", "new front")
REPLY = {
    "id": "c",
    "object": "chat.completion",
    "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a short answer"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(auth)s
local f = io.open("%(body)s", "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


# ---- the parts, each run as `bench_front.py --serve ROLE ...` in a process of its own -----------------


def serve_standin(delay: float) -> None:
    from aiohttp import web

    reply = json.dumps(REPLY).encode()
    events = [
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}).encode() + b"\n\n"
        for i in range(8)
    ]
    events.append(b"data: " + json.dumps({"choices": [], "usage": REPLY["usage"]}).encode() + b"\n\ndata: [DONE]\n\n")

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        await asyncio.sleep(delay)
        if b'"stream": true' not in body[:200]:
            return web.Response(body=reply, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 << 20, handler_args={"read_bufsize": 1 << 20})
    app.router.add_post(PATH, chat)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        print=None,
        access_log=None,
        backlog=4096,
        handle_signals=True,
    )


def serve_front(which: str, upstream: str, capacity: int) -> None:
    if which == "old":
        sys.path.insert(0, os.environ["BENCH_OLD_DIR"])
        from old_front import Front  # type: ignore[import-not-found]
    else:
        from hpc_marker.llm.front import Front
    from hpc_marker.llm.rules import ALLOWED_VLLM

    front = Front(
        upstream,
        SECRET,
        host="127.0.0.1",
        port=0,
        timeout_s=60,
        allowed=ALLOWED_VLLM,
        capacity=capacity,
        **({"log": lambda line: None} if which == "old" else {}),  # today's front logs through the logging module
    ).start()
    print(front.url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    front.stop()


def old_front_dir(ref: str, where: Path) -> Path:
    """The old front, its gate and its rules at `ref`, as modules of a folder of their own."""
    for name in ("front", "gate", "rules"):
        text = subprocess.run(
            ["git", "show", f"{ref}:hpc_marker/llm/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        for other in ("gate", "rules"):
            text = text.replace(f"from hpc_marker.llm.{other} import", f"from old_{other} import")
        (where / f"old_{name}.py").write_text(text)
    return where


# ---- the benchmark -----------------------------------------------------------------------------------------


PINS: dict[str, set[int]] = {}  # --pin: the CPUs each kind of part may run on ("front", "load": stand-in and wrk)


def pinned(kind: str) -> list[str]:
    """The argv prefix that keeps a part on its CPUs (--pin), or nothing."""
    cpus = PINS.get(kind)
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []


def start(role: list[str], env: dict[str, str] | None = None, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a part; its URL (a front prints it; the stand-in's is its port, once it accepts)."""
    kind = "load" if role[0] == "standin" else "front"
    proc = subprocess.Popen(
        [*pinned(kind), sys.executable, __file__, "--serve", *role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    if port is None:
        return proc, proc.stdout.readline().strip()  # type: ignore[union-attr]
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the stand-in did not listen on port {port} within 30 s")


def wrk(url: str, lua: Path, clients: int, seconds: int) -> dict:
    argv = [*pinned("load"), "wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(lua), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False).stdout
    line = next((line for line in out.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result: {out[-500:]}")
    result = json.loads(line[len("RESULT ") :])
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    return result


def bodies(tmp: Path) -> dict[str, Path]:
    message = {"model": "bench", "messages": [{"role": "user", "content": "convert this page"}]}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (1 << 20)}}  # ~1 MB
    found = {}
    for name, body in (
        ("json", message),
        ("sse", {"stream": True, **message}),  # the stand-in looks at the start
        ("1mb", {**message, "messages": [{"role": "user", "content": [image]}]}),
    ):
        found[name] = tmp / f"{name}.json"
        found[name].write_text(json.dumps(body))
    return found


def cpu_s(proc: subprocess.Popen) -> float:
    """CPU time (user + system) of a process so far, seconds."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, tmp: Path) -> list[dict]:
    from hpc_marker.servers.managed import free_port

    port = free_port()
    standin, direct = start(["standin", str(args.delay)], {"BENCH_PORT": str(port)}, port=port)
    old_dir = old_front_dir(args.old_ref, tmp)
    parts = [standin]
    try:
        old, old_url = start(["old", direct, str(args.clients)], {"BENCH_OLD_DIR": str(old_dir)})
        parts.append(old)
        new, new_url = start(["new", direct, str(args.clients)])
        parts.append(new)
        urls = {"direct": direct + PATH, "old front": f"{old_url}/task/1{PATH}", "new front": f"{new_url}/task/1{PATH}"}
        procs = {"direct": None, "old front": old, "new front": new}
        rows = []
        for scenario, body in bodies(tmp).items():
            for target, url in urls.items():
                lua = tmp / f"{scenario}-{target.replace(' ', '-')}.lua"
                auth = "" if target == "direct" else f'wrk.headers["Authorization"] = "Bearer {SECRET}"'
                lua.write_text(LUA % {"auth": auth, "body": body})
                wrk(url, lua, args.clients, 2)  # warm-up: connections open, code paths hot
                front = procs[target]
                before = (cpu_s(standin), cpu_s(front) if front else 0.0)
                result = wrk(url, lua, args.clients, args.seconds)
                used = (cpu_s(standin) - before[0], (cpu_s(front) - before[1]) if front else 0.0)
                done = max(result["requests"], 1)
                rows.append(
                    {
                        "scenario": scenario,
                        "target": target,
                        **result,
                        "load": os.getloadavg()[0],
                        "standin_cpu_ms": round(1e3 * used[0] / done, 3),
                        "front_cpu_ms": round(1e3 * used[1] / done, 3),
                    }
                )
                print(
                    f"{scenario:5} {target:10} {result['rps']:8.1f} req/s  p50 {result['p50_us'] / 1e3:7.1f} ms  "
                    f"p99 {result['p99_us'] / 1e3:7.1f} ms  errors {result['errors']}  "
                    f"front CPU {rows[-1]['front_cpu_ms']:.2f} ms/request",
                    flush=True,
                )
        return rows
    finally:
        for proc in parts:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def table(rows: list[dict], clients: int) -> str:
    lines = [
        "| body | target | requests/s | p50 | p99 | errors | cost of the front | front's CPU per request |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        direct = next(r for r in rows if r["scenario"] == row["scenario"] and r["target"] == "direct")
        front = row["target"] != "direct"
        cost = f"{100 * (1 - row['rps'] / max(direct['rps'], 1e-9)):.0f} %" if front else ""
        cpu = f"{row['front_cpu_ms']:.2f} ms" if front else ""
        lines.append(
            f"| {row['scenario']} | {row['target']} | {row['rps']:,.0f} | {row['p50_us'] / 1e3:,.0f} ms | "
            f"{row['p99_us'] / 1e3:,.0f} ms | {row['errors']} | {cost} | {cpu} |"
        )
    lines.append("")
    for scenario in SCENARIOS:
        old, new = (next(r for r in rows if r["scenario"] == scenario and r["target"] == t) for t in TARGETS[1:])
        speed, cpu = new["rps"] / max(old["rps"], 1e-9), old["front_cpu_ms"] / max(new["front_cpu_ms"], 1e-9)
        lines.append(
            f"{scenario}: the new front serves {speed:.1f}x the old one's requests/s at {clients} clients, "
            f"for {cpu:.1f}x less CPU per request"
        )
    return "\n".join(lines)


def _cpus(text: str) -> set[int]:
    """A taskset-style CPU list ("0", "0,2", "1-3") as a set."""
    found: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)  # a part, started by the benchmark itself
    parser.add_argument("--clients", type=int, default=512)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per run (after a 2 s warm-up)")
    parser.add_argument("--delay", type=float, default=0.5, help="the stand-in's time per request, seconds")
    parser.add_argument("--old-ref", default=OLD_REF, help="the git commit whose front is the old one")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--pin",
        metavar="FRONT_CPUS:LOAD_CPUS",
        help="run the fronts on FRONT_CPUS and the stand-in and wrk on LOAD_CPUS (taskset lists, e.g. 1:0): the "
        "front on cores of its own, as on a GPU node, so its cost is not CPU taken from the stand-in",
    )
    args = parser.parse_args()
    if args.pin:
        front_cpus, _, load_cpus = args.pin.partition(":")
        PINS.update(front=_cpus(front_cpus), load=_cpus(load_cpus))
    if args.serve:
        role, *rest = args.serve
        if role == "standin":
            serve_standin(float(rest[0]))
        else:
            serve_front(role, rest[0], int(rest[1]))
        return 0
    if shutil.which("wrk") is None:
        print("bench_front: needs wrk on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        rows = run(args, Path(tmp))
    import aiohttp

    head = (
        f"{platform.node()}: {os.cpu_count()} CPUs, load average {before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; Python {platform.python_version()}, aiohttp {aiohttp.__version__}; "
        f"{args.clients} clients, {args.seconds} s per run, stand-in delay {args.delay:g} s"
        + (
            f"; fronts on CPUs {args.pin.split(':')[0]}, stand-in and wrk on {args.pin.split(':')[1]}"
            if args.pin
            else ""
        )
    )
    print("\n" + head + "\n\n" + table(rows, args.clients))
    if args.json:
        args.json.write_text(json.dumps({"machine": head, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
