"""The run record: typed parts, one JSON form with a version, and run folders written before it still read.

data/run-v1.json is a run.json as hpcmarker wrote it before run.json had a version (commit d6baaf1: prepare_run of a
marker run with a two-replica vLLM service, marker 2.x's per-task server, a profile with every job setting and a
follow-up's parent); data/run-v1-contexts.json the template variables that commit's script_contexts gave for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc_marker.engines import output_settings
from hpc_marker.engines.base import EngineOptions
from hpc_marker.llm.settings import LlmRecord
from hpc_marker.runstate.layout import RunPaths
from hpc_marker.runstate.record import RECORD_VERSION, JobSettings, ParentRun, Round, RunRecord
from hpc_marker.servers.vllm import InferenceSettings
from hpc_marker.submission.scripts import script_contexts

DATA = Path(__file__).parent / "data"
V1 = json.loads((DATA / "run-v1.json").read_text())
V1_RUN_DIR = Path("/tmp/rec-fixture/out/.hpcmarker/runs/20260101-000000-abcd")  # where it was written


def test_a_version_1_record_reads_with_the_same_typed_values():
    record = RunRecord.from_json(V1)
    assert record.engine_options == EngineOptions(
        paginate=False, force_ocr=True, output_format="json", images=False, extra_config={"disable_tqdm": True}
    )
    assert record.llm == LlmRecord(
        model="qwen2.5:7b",
        server="vllm",
        replicas=2,
        gpus=2,
        parallel=8,
        ctx=8192,
        options={"temperature": 0.0},
        wait_timeout_s=900.0,
        request_timeout_s=300.0,
        concurrency=3,
        cpus=6,
        mem="32G",
    )
    assert record.inference == InferenceSettings(
        mode="native", extra_args=("--enforce-eager",), startup_timeout_s=600.0
    )
    assert record.job_settings == JobSettings(
        gres="gpu:a100:1",
        account="proj42",
        qos="normal",
        constraint="a100",
        setup=("module load cuda/12.4", 'source "$HOME/venvs/hpcmarker/bin/activate"'),
        llm_gres_type="a100",
        vars={"image": "/shared/hpcmarker.sif", "binds": "/scratch"},
    )
    assert (record.run_id, record.engine, record.tasks, record.gpus, record.max_running, record.items) == (
        "20260101-000000-abcd",
        "marker",
        1,
        2,
        3,
        2,
    )
    assert record.parent == ParentRun(run_id="20251231-000000-0000", select="garbled", min_share=0.1, documents=2)
    # What readers derive from it is what they derived from the dicts (values computed at d6baaf1)
    assert output_settings(record.engine, record.engine_options, record.llm) == {
        "engine": "marker",
        "extra_config": {"disable_tqdm": True},
        "force_ocr": True,
        "images": False,
        "llm": {"ctx": 8192, "model": "qwen2.5:7b", "options": {"temperature": 0.0}},
        "output_format": "json",
        "paginate": False,
    }
    contexts = script_contexts(RunPaths(V1_RUN_DIR), record, python="/opt/venv/bin/python")
    assert json.loads(json.dumps(contexts)) == json.loads((DATA / "run-v1-contexts.json").read_text())


def test_version_2_is_version_1_with_a_version():
    written = RunRecord.from_json(V1).to_json()
    # fields added since (with their defaults): the output flags' thresholds, rounds (manage/rounds.py), the
    # start-up jitter (none for older runs); whether the profile's partition preempts (runtime/preempt.py)
    assert {key: written.pop(key) for key in ("quality", "max_rounds", "rounds", "start_jitter")} == {
        "quality": None,
        "max_rounds": 1,
        "rounds": [],
        "start_jitter": "0",
    }
    assert written["job_settings"].pop("preemptible") is False
    assert written["llm"].pop("check") == "auto"  # --llm-check (llm/check.py): by engine
    assert written == {"version": RECORD_VERSION, **V1}
    assert next(iter(RunRecord.from_json(V1).to_json())) == "version" and RECORD_VERSION == 2


def test_rounds_round_trip(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir(parents=True)
    record = RunRecord.from_json(V1)
    record.max_rounds = 4
    record.rounds = [Round(1, 1.0, (0, 1), "submit", 3, "time limit"), Round(2, 2.0, (1,), "continue", grown=(2,))]
    paths.save_record(record)
    assert paths.load_record().rounds == record.rounds and paths.load_record().max_rounds == 4


def test_run_json_round_trips(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir(parents=True)
    record = RunRecord.from_json(V1)
    paths.save_record(record)
    assert json.loads(paths.record.read_text())["version"] == RECORD_VERSION
    assert paths.load_record() == record


def test_an_older_record_takes_the_defaults_of_what_it_lacks():
    old = {
        key: value
        for key, value in V1.items()
        if key not in ("inference", "mps", "bisect", "items", "max_running", "parent")
    }
    old["llm"] = {key: value for key, value in V1["llm"].items() if key not in ("server", "replicas", "concurrency")}
    old["job_settings"] = {"gres": "gpu:1"}
    old["engine_options"] = {"output_format": "markdown"}
    record = RunRecord.from_json(old)
    assert (record.llm.server, record.llm.replicas, record.llm.concurrency) == ("ollama", 1, None)
    assert (record.inference, record.mps, record.bisect, record.items, record.max_running) == (
        None,
        None,
        True,
        0,
        None,
    )
    assert record.job_settings == JobSettings(gres="gpu:1")
    assert record.engine_options == EngineOptions()
    assert RunRecord.from_json(dict(old, inference={})).inference == InferenceSettings()  # off


def test_a_later_version_or_an_unknown_key_is_refused():
    with pytest.raises(ValueError, match=r"^run.json version 3: this hpcmarker reads versions 1 to 2$"):
        RunRecord.from_json(dict(V1, version=3))
    with pytest.raises(ValueError, match=r"^run.json: unknown keys shiny \(written by a later hpcmarker\?\)$"):
        RunRecord.from_json(dict(V1, shiny=True))
    with pytest.raises(TypeError):  # a field without a default is missing: not a record
        RunRecord.from_json({key: value for key, value in V1.items() if key != "engine"})
