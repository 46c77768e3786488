"""The `hpcmarker llm` command group: bench, pull, create (login-node preparation) and serve (hidden).

`llm` is a click.Group (ListedGroup: whole descriptions in its help); hpcmarker's main CLI adds it with
`cli.add_command(llm)`.
Errors are one line: exit 2 for bad input, 1 for a server that refused or cannot be reached.
"""

from __future__ import annotations

import json
import os

import click

from hpc_marker.cli.group import VERBOSITY, InputError, ListedGroup
from hpc_marker.util.logs import configure


def _default_url(server: str = "ollama") -> str:
    if server == "vllm":
        return os.environ.get("VLLM_URL") or "http://127.0.0.1:8000"
    return os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"


URL_OPTION = click.option(
    "--url", default=None, help="Ollama to talk to (default: $OLLAMA_HOST, else http://127.0.0.1:11434)."
)


def _parallel_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise InputError(f"--parallel {text!r}: give concurrencies like 1,2,4,8") from None
    if not levels or levels[0] < 1:
        raise InputError(f"--parallel {text!r}: concurrencies must be at least 1")
    return levels


def parse_option(text: str) -> tuple[str, object]:
    """`key=value` -> (key, JSON value, or the string when it is not JSON): temperature=0.1, stop=["x"]."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--option {text!r}: use key=value, e.g. temperature=0")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _connection_hint(url: str) -> str:
    from hpc_marker.llm.bench import display_url

    return f"cannot reach Ollama at {display_url(url)}: start `ollama serve` there or pass --url"


llm = ListedGroup(
    "llm",
    help="The run's LLM (Ollama or vLLM): measure it, prepare Ollama models on a login node.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@llm.command("bench")
@click.argument("model")
@click.option(
    "--server",
    type=click.Choice(["ollama", "vllm"]),
    default="ollama",
    show_default=True,
    help="What serves MODEL: Ollama (its API) or vLLM (the OpenAI chat API).",
)
@click.option(
    "--url",
    default=None,
    help="The server (default: Ollama $OLLAMA_HOST, else http://127.0.0.1:11434; "
    "vLLM $VLLM_URL, else http://127.0.0.1:8000).",
)
@click.option("--api-key", envvar="VLLM_API_KEY", help="vLLM's --api-key, if it has one (default: $VLLM_API_KEY).")
@click.option(
    "--start", is_flag=True, help="Start a local `ollama serve` / `vllm serve MODEL` for the bench (and stop it after)."
)
@click.option("--gpus", default=1, show_default=True, type=int, help="vLLM with --start: tensor parallel GPUs.")
@click.option("--parallel", "levels", default="1,2,4,8", show_default=True, help="Concurrencies to measure.")
@click.option("--requests", default=16, show_default=True, type=int, help="Requests per concurrency.")
@click.option("--prompt-tokens", default=512, show_default=True, type=int, help="About this many words per prompt.")
@click.option("--max-tokens", default=128, show_default=True, type=int, help="At most this many generated tokens.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, type=float, help="Per request, seconds.")
@click.option("--models-dir", help="OLLAMA_MODELS for --start.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench(
    model,
    server,
    url,
    api_key,
    start,
    gpus,
    levels,
    requests,
    prompt_tokens,
    max_tokens,
    timeout_s,
    models_dir,
    as_json,
) -> None:
    """Tokens/s and latency of MODEL at each concurrency: choose --llm-parallel at the knee (*)."""
    from hpc_marker.llm.bench import (
        BenchError,
        bench_table,
        display_url,
        local_ollama,
        local_vllm,
        run_bench,
        suggest_parallel,
    )
    from hpc_marker.servers.managed import ServerFailed

    parallel = _parallel_levels(levels)
    if url and start:
        raise InputError("--url and --start exclude each other")
    if requests < 1 or prompt_tokens < 1 or max_tokens < 1 or gpus < 1:
        raise InputError("--requests, --prompt-tokens, --max-tokens and --gpus must be at least 1")
    sizes = (requests, prompt_tokens, max_tokens, timeout_s)
    try:
        if start and server == "vllm":
            with local_vllm(model, max(parallel), gpus=gpus) as (local_url, key):
                rows = run_bench(local_url, model, parallel, *sizes, server="vllm", api_key=key)
            where = f"local vllm (--max-num-seqs {max(parallel)})"
        elif start:
            with local_ollama(max(parallel), models_dir=models_dir) as local_url:
                rows = run_bench(local_url, model, parallel, *sizes)
            where = f"local ollama (OLLAMA_NUM_PARALLEL={max(parallel)})"
        else:
            target = url or _default_url(server)
            rows, where = (
                run_bench(target, model, parallel, *sizes, server=server, api_key=api_key),
                display_url(target),
            )
    except (BenchError, ServerFailed) as exc:
        raise click.ClickException(str(exc)) from None
    knee = suggest_parallel(rows)
    if as_json:
        click.echo(
            json.dumps(
                {"model": model, "server": where, "suggested_parallel": knee, "rows": [r.to_json() for r in rows]},
                indent=1,
            )
        )
        return
    from rich.console import Console

    console = Console()
    console.print(
        bench_table(
            rows,
            f"{model} on {where}: {requests} requests per concurrency, "
            f"~{prompt_tokens} prompt words, <= {max_tokens} tokens each",
        )
    )
    for row in rows:
        for error in row.errors:
            click.echo(f"  concurrency {row.concurrency}: {error}", err=True)
    click.echo(f"suggested --llm-parallel: {knee}" if knee else "no concurrency ran without failures", err=knee is None)


@llm.command("pull")
@click.argument("model")
@URL_OPTION
@click.option("--timeout", "timeout_s", default=3600.0, show_default=True, type=float, help="Seconds without progress.")
def pull(model, url, timeout_s) -> None:
    """Download MODEL into the Ollama at --url (run on a login node, with the OLLAMA_MODELS the jobs use)."""
    import httpx
    import ollama

    from hpc_marker.llm.client import ollama_client

    target = url or _default_url()
    client = ollama_client(target, timeout_s)
    last: tuple[str, int] = ("", -1)
    try:
        for part in client.pull(model, stream=True):
            status = part.status or ""
            step = 10 * part.completed // part.total if part.total and part.completed is not None else -1
            if (status, step) != last:
                click.echo(f"{status} {10 * step}%" if step >= 0 else status)
            last = (status, step)
    except ollama.ResponseError as exc:
        raise click.ClickException(f"pull {model}: {exc.error}") from None
    except (httpx.HTTPError, ConnectionError):
        raise click.ClickException(_connection_hint(target)) from None
    click.echo(f"pulled {model}")


@llm.command("create")
@click.argument("name")
@click.option("--from", "base", required=True, help="The model to derive from, e.g. qwen2.5:7b.")
@click.option("--ctx", type=int, help="Context window (num_ctx) in tokens.")
@click.option("--option", "options", multiple=True, help="A Modelfile parameter as key=value (repeatable).")
@URL_OPTION
def create(name, base, ctx, options, url) -> None:
    """Create model NAME from another with a context size and parameters."""
    import httpx
    import ollama

    from hpc_marker.llm.client import ollama_client

    params = dict(parse_option(text) for text in options)
    if ctx is not None:
        if ctx < 256:
            raise InputError(f"--ctx {ctx}: must be at least 256 tokens")
        params["num_ctx"] = ctx
    target = url or _default_url()
    client = ollama_client(target, 600.0)
    try:
        client.create(model=name, from_=base, parameters=params or None)
    except ollama.ResponseError as exc:
        raise click.ClickException(f"create {name}: {exc.error}") from None
    except (httpx.HTTPError, ConnectionError):
        raise click.ClickException(_connection_hint(target)) from None
    click.echo(f"created {name} from {base}" + (f" with {json.dumps(params, sort_keys=True)}" if params else ""))


@llm.command("serve", hidden=True)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--replica", default=0, show_default=True, type=int, help="Which replica of the service this is.")
@click.pass_context
def serve(ctx: click.Context, run_dir, replica) -> None:
    """Run RUN_DIR's LLM service until SIGTERM (what each service job runs)."""
    from hpc_marker.llm.service import ServiceError, serve_llm

    configure(ctx.meta.get(VERBOSITY, 0), job=f"llm {replica}")  # a service's log: timestamped lines on stdout
    try:
        serve_llm(run_dir, replica)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
