"""Shared fixtures (sample PDFs, an isolated run index, the stand-in Ollama's models, the browser) and the
one gate for the real parts some tests need.

The gate: a test that needs a real part carries that part's marker (registered in pyproject.toml):

  slurm    a reachable Slurm cluster with accounting (`sinfo` and `sacct` answer)
  marker   marker-pdf importable in this Python
  browser  a headless Chromium on PATH
  root     root, able to mount a tmpfs and make a cgroup v1 memory group
  corpus   the shared corpus at ../shared/corpus
  ruff     ruff importable in this Python (the lint gate, tests/architecture/test_lint.py)

Where its part is missing, a marked test is skipped, and the skip names what is missing. Where
HPCMARKER_REQUIRE names the part (`HPCMARKER_REQUIRE=slurm,browser`, or `all`), it fails instead,
so a CI machine that lost its cluster fails rather than passes with everything skipped.
`slow` (a test that takes more than 5 s) is a plain marker. The fast tier, `scripts/test.sh --fast`, is
`-m "not slow and not slurm"`; the gate probes only the parts of the tests that are selected, so it does not
reach a Slurm cluster (tests/test_gate.py).

Several test clusters (scripts/slurm-test-cluster.sh, HPCMARKER_SLURM_INSTANCE): where HPCMARKER_SLURM_CONFS lists
their slurm.conf files (colon-separated), pytest-xdist worker gwN points SLURM_CONF at the Nth (modulo their count),
so the Slurm tests of two workers never share a cluster (`scripts/test.sh --split` runs them so).

Helpers for driving runs are in runkit.py, the inputs in inputs.py; import them from there.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from inputs import CORPUS, EXAMPLES, make_bad_pdfs  # noqa: F401 - tests/report/test_report.py imports the last two from here

REQUIRE_ENV = "HPCMARKER_REQUIRE"
CONFS_ENV = "HPCMARKER_SLURM_CONFS"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


# ---- the gate ---------------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _slurm_missing() -> str | None:
    for argv in (["sinfo", "-h"], ["sacct", "-n", "-X", "--starttime", "now"]):
        if shutil.which(argv[0]) is None:
            return f"no `{argv[0]}` on PATH"
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv)}` did not answer within 10 s"
        if done.returncode:
            return f"`{' '.join(argv)}` failed: {_first_line(done.stderr)}"
    return None


def _marker_missing() -> str | None:
    if importlib.util.find_spec("marker") is None:
        return "marker-pdf is not installed in this Python"
    return None


def find_chromium() -> str | None:
    """The headless browser on PATH, if any."""
    return next(filter(None, map(shutil.which, BROWSERS)), None)


def _browser_missing() -> str | None:
    return None if find_chromium() else f"none of {', '.join(BROWSERS)} is on PATH"


def _root_missing() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("mount") is None:
        return "no `mount` on PATH"
    with tempfile.TemporaryDirectory(prefix="hpcmarker-probe-") as mount:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], capture_output=True, text=True)
        if done.returncode:
            return f"cannot mount a tmpfs: {_first_line(done.stderr)}"
        subprocess.run(["umount", "-l", mount], capture_output=True)
    group = CGROUP_V1_MEMORY / f"hpcmarker-probe-{os.getpid()}"
    try:
        group.mkdir()
        group.rmdir()
    except OSError as exc:
        return f"no writable cgroup v1 memory controller at {CGROUP_V1_MEMORY}: {exc.strerror}"
    return None


def _corpus_missing() -> str | None:
    return None if CORPUS.is_dir() else f"no shared corpus at {CORPUS}"


def _ruff_missing() -> str | None:
    return None if importlib.util.find_spec("ruff") else "ruff is not installed in this Python"


# part -> (what says why it is missing, or None when it is there; how to get it)
PARTS = {
    "slurm": (
        _slurm_missing,
        "bring up the test cluster: scripts/slurm-test-cluster.sh up (as root), export SLURM_CONF",
    ),
    "marker": (_marker_missing, 'pip install "hpc-marker[marker]"; see scripts/test-marker-versions.sh'),
    "browser": (_browser_missing, "apt-get install -y chromium"),
    "root": (_root_missing, "run the tests as root on a machine with cgroup v1"),
    "corpus": (_corpus_missing, "the corpus is shared by the project, beside the repository"),
    "ruff": (_ruff_missing, 'pip install -e ".[test]"; scripts/setup.sh does'),
}


@functools.cache
def missing(part: str) -> str | None:
    """Why `part` is missing here, in one line with how to get it; None when it is there. Probed once."""
    why = PARTS[part][0]()
    return None if why is None else f"{why} ({PARTS[part][1]})"


def required_parts(value: str | None) -> frozenset[str]:
    """The parts HPCMARKER_REQUIRE names: a comma-separated list of parts, or `all`."""
    names = {name.strip() for name in (value or "").split(",") if name.strip()}
    if "all" in names:
        return frozenset(PARTS)
    unknown = names - set(PARTS)
    if unknown:
        raise pytest.UsageError(
            f"{REQUIRE_ENV}={value}: no part named {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)} (or all)"
        )
    return frozenset(names)


_REQUIRED = pytest.StashKey[frozenset]()  # on the config: the parts HPCMARKER_REQUIRE names
_FAILS = pytest.StashKey[str]()  # on a test: why it fails (a required part is missing)


def cluster_of_worker(confs: str | None, worker: str | None) -> str | None:
    """The slurm.conf an xdist worker (`gw3`) uses among `confs` (HPCMARKER_SLURM_CONFS); None: SLURM_CONF as it is."""
    listed = [conf for conf in (confs or "").split(":") if conf]
    if not listed or not worker or not worker.startswith("gw"):
        return None
    return listed[int(worker[2:]) % len(listed)]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REQUIRED] = required_parts(os.environ.get(REQUIRE_ENV))  # a typo stops the run here
    if conf := cluster_of_worker(os.environ.get(CONFS_ENV), os.environ.get("PYTEST_XDIST_WORKER")):
        os.environ["SLURM_CONF"] = conf  # before any test (or the gate's probe) asks Slurm anything


def pytest_report_header(config: pytest.Config) -> str:
    required = sorted(config.stash[_REQUIRED])
    return (
        f"{REQUIRE_ENV}={','.join(required)}: tests needing a missing {'/'.join(required)} fail"
        if required
        else f"{REQUIRE_ENV} unset: tests needing a missing part skip"
    )


@pytest.hookimpl(trylast=True)  # after -m and -k: only the parts of the tests that will run are probed
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A marked test whose part is missing is skipped, with why; where HPCMARKER_REQUIRE names the part,
    it is failed instead (at its setup, below)."""
    required = config.stash[_REQUIRED]
    for item in items:
        gone = [part for part in PARTS if item.get_closest_marker(part) and missing(part)]
        if must_have := [part for part in gone if part in required]:
            item.stash[_FAILS] = "; ".join(
                f"{part} is required ({REQUIRE_ENV}) but missing: {missing(part)}" for part in must_have
            )
        elif gone:
            item.add_marker(pytest.mark.skip(reason="; ".join(f"{part} missing: {missing(part)}" for part in gone)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _FAILS in item.stash:
        pytest.fail(item.stash[_FAILS], pytrace=False)


# ---- fixtures --------------------------------------------------------------------------------------

# The tests' own user config (never the real user's): the few sample pages are planned on as many tasks as a
# test asks for (the packaged min_task_pages would give most small runs a single task). Tests of the default
# itself, or of the config layers, point XDG_CONFIG_HOME elsewhere. Runs do not continue by themselves
# (max_rounds = 1): the tests of stops see the round that stopped; tests of continuation pass --max-rounds.
TEST_USER_CONFIG = "[submit]\nmin_task_pages = 1\nmax_rounds = 1\n"


def _test_config_home(tmp_path_factory) -> str:
    config = tmp_path_factory.mktemp("config")
    (config / "hpcmarker").mkdir()
    (config / "hpcmarker" / "config.toml").write_text(TEST_USER_CONFIG)
    return str(config)


# An idle task (runtime/scheduler.py) looks again every eighth of its lease, up to 15 s: the last tasks of a run
# would wait that long after its last item. The tests' runs (local tasks and Slurm jobs alike, which get this
# environment) look again every half second instead; tests/runtime/test_scheduler.py checks the default.
# A local submit in this process looks at its jobs every 0.2 s, not every second.
IDLE_POLL_S = "0.5"
LOCAL_POLL_S = 0.2


@pytest.fixture(scope="session", autouse=True)
def test_user_config(tmp_path_factory):
    """The tests' user config and idle poll from the start, so that module-scoped fixtures (whole runs) use
    them too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", _test_config_home(tmp_path_factory))
        # never the user's caches and run index, also in module-scoped runs (set up before isolated_state)
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("session-cache")))
        patch.setenv("HPCMARKER_STATE_DIR", str(tmp_path_factory.mktemp("session-state")))
        patch.setenv("HPCMARKER_IDLE_POLL_S", IDLE_POLL_S)
        patch.setattr("hpc_marker.executors.local.POLL_S", LOCAL_POLL_S)
        yield


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Each test gets its own run index, page-count cache and user config, never the user's."""
    monkeypatch.setenv("HPCMARKER_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_CONFIG_HOME", _test_config_home(tmp_path_factory))
    # Local runs are fitted to the machine's cores (executors/local.py); as if it had 64, so that a test's
    # --gpus N is its N tasks on any machine. tests/cli/test_local_fit.py fits to real cores.
    monkeypatch.setenv("HPCMARKER_LOCAL_CORES", "64")


@pytest.fixture(autouse=True)
def restored_logging():
    """What a test's `hpcmarker` invocation (util/logs.configure) did to the hpc_marker logger is undone after it."""
    root = logging.getLogger("hpc_marker")
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def log_lines(caplog):
    """The messages hpc_marker's loggers wrote at INFO and above so far in this test: `log_lines()`."""
    caplog.set_level(logging.INFO, logger="hpc_marker")
    return lambda: [r.getMessage() for r in caplog.records if r.name.startswith("hpc_marker")]


@pytest.fixture
def sample_pdfs(tmp_path) -> Path:
    """A copy of the shipped sample PDFs (en/, zh/)."""
    target = tmp_path / "pdfs"
    shutil.copytree(EXAMPLES, target)
    return target


@pytest.fixture
def chromium() -> str:
    """The headless browser's path, for tests marked `browser` (the gate has made sure it is there)."""
    found = find_chromium()
    assert found, "ask for the chromium fixture from tests marked `browser` only"
    return found


@pytest.fixture
def standin_models(tmp_path, monkeypatch) -> Path:
    """The stand-in `ollama` (tests/standin) first on PATH, with model tiny:1b in OLLAMA_MODELS (both
    passed on to local tasks and to Slurm jobs); returns the models folder."""
    from standin.harness import path_with_standin, seed_model

    models = tmp_path / "models"
    seed_model(models, "tiny:1b")
    monkeypatch.setenv("PATH", path_with_standin())
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    return models
