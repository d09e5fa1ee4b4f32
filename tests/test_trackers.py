"""`[output] trackers`: a run killed and resumed feeds all four trackers, read back here.

Each tracker's own reader checks what the generated script sent: every metrics.jsonl
line at its step, the resolved recipe as the run's config, files only under the run
directory, and the resumed attempt continuing the same tracker run where the tracker
can (wandb's id, mlflow's run id, aim's run hash are kept in run.json).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training import TINY, _build, _kill, _metrics, _project, _train  # noqa: E402

pytestmark = pytest.mark.slow

TRACKED = TINY + '\n[output]\ntrackers = ["tensorboard", "wandb", "mlflow", "aim"]\n'


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed right after its step-4 checkpoint, then resumed to step 8."""
    tmp_path = tmp_path_factory.mktemp("tracked")
    project = _project(tmp_path, TRACKED)
    build_dir = _build(project)
    with pytest.MonkeyPatch.context() as mp:  # the trackers' defaults, not this shell's settings
        for var in [k for k in os.environ if k.startswith(("WANDB_", "MLFLOW_"))]:
            mp.delenv(var)
        _kill(tmp_path, build_dir, 4, "after-commit")
        _train(build_dir)
    return project / "runs" / "tiny"


def _expected(run_dir: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} from metrics.jsonl, every number but the step."""
    out: dict[str, dict[int, float]] = {}
    for line in _metrics(run_dir):
        for key, value in line.items():
            if key != "step":
                out.setdefault(key, {})[line["step"]] = value
    return out


def test_run_json_keeps_the_tracker_ids_over_the_resume(tracked_run: Path) -> None:
    from recipec.runtime import trackers

    record = json.loads((tracked_run / "run.json").read_text())
    assert record["attempts"] == 2 and record["status"] == "completed"
    ids = record["trackers"]
    assert set(ids) == {"wandb", "mlflow", "aim"}
    assert ids["wandb"] == trackers.run_id(tracked_run, record["started"])
    steps = [m["step"] for m in _metrics(tracked_run) if "loss" in m]
    assert steps == list(range(1, 9))  # the lines after the checkpoint were dropped, then written again


def test_tensorboard_has_every_metric_at_its_step_and_the_recipe(tracked_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged: dict[str, dict[int, float]] = {}
    files = sorted((tracked_run / "trackers" / "tiny").glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per attempt
    for path in files:
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for e in events.Scalars(tag):
                logged.setdefault(tag, {})[e.step] = e.value
    expected = _expected(tracked_run)
    assert set(logged) == set(expected)
    for key, values in expected.items():
        assert logged[key] == pytest.approx(values, rel=1e-6), key  # event files hold float32
    hparams = [p.read_text() for p in (tracked_run / "trackers" / "tiny").glob("*/hparams.yml")]
    assert hparams and all("optim.lr: 0.01" in text and "recipe.name: tiny" in text for text in hparams)


def _wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_runs_hold_the_metrics_and_the_recipe(tracked_run: Path) -> None:
    ids = json.loads((tracked_run / "run.json").read_text())["trackers"]
    runs = sorted((tracked_run / "trackers" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(ids["wandb"]) for r in runs)  # one run id, two attempts
    expected = _expected(tracked_run)
    for attempt, run in enumerate(runs):
        logged: dict[str, dict[int, float]] = {}
        config: dict[str, object] = {}
        for record in _wandb_records(run / f"run-{ids['wandb']}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                for key, value in items.items():
                    if not key.startswith("_"):
                        logged.setdefault(key, {})[items["_step"]] = value
            elif kind == "config":
                config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.config.update})
        if attempt == 0:
            # wandb's writer process buffers: what the killed attempt sent may be lost (metrics.jsonl
            # is the record), but what was written must be right
            assert all(logged[k].items() <= expected[k].items() for k in logged)
            continue
        after = {k: {s: v for s, v in values.items() if s > 4} for k, values in expected.items()}
        assert logged == {k: v for k, v in after.items() if v}  # the resumed attempt: steps 5 to 8
        assert config["optim.lr"] == 0.01 and config["recipe.name"] == "tiny" and config["train.max_steps"] == 8


def test_mlflow_has_one_run_with_every_metric_and_the_recipe(tracked_run: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{(tracked_run / 'trackers' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    ids = json.loads((tracked_run / "run.json").read_text())["trackers"]
    assert [r.info.run_id for r in runs] == [ids["mlflow"]]  # the resume went on in the same run
    expected = _expected(tracked_run)
    for key, values in expected.items():
        history = {m.step: m.value for m in sorted(client.get_metric_history(ids["mlflow"], key), key=lambda m: m.timestamp)}
        assert history == pytest.approx(values), key
    params = runs[0].data.params
    assert params["optim.lr"] == "0.01" and params["recipe.name"] == "tiny"


def test_aim_has_one_run_with_every_metric_and_the_recipe(tracked_run: Path) -> None:
    from aim import Repo, Run
    from aim.sdk.index_manager import RepoIndexManager

    repo = Repo(str(tracked_run / "trackers"))
    ids = json.loads((tracked_run / "run.json").read_text())["trackers"]
    assert repo.list_all_runs() == [ids["aim"]]  # the resume went on in the same run
    RepoIndexManager.get_index_manager(repo).index(ids["aim"])  # what `aim up` does in the background
    run = Run(run_hash=ids["aim"], repo=repo, read_only=True)
    logged = {}
    for metric in run.metrics():
        frame = metric.dataframe()
        logged[metric.name] = {int(step): float(value) for step, value in zip(frame["step"], frame["value"])}
    assert logged == _expected(tracked_run)
    assert run["hparams"]["optim.lr"] == 0.01 and run["hparams"]["recipe.name"] == "tiny"


def test_trackers_write_only_under_the_run_directory(tracked_run: Path) -> None:
    project = tracked_run.parent.parent
    assert sorted(p.name for p in project.iterdir()) == [".recipec", "build", "killer.py", "recipes", "runs"]
    assert not (project / "mlruns").exists() and not (project / "wandb").exists()


def test_a_tracker_not_installed_stops_the_script_before_torch_is_imported(tmp_path: Path) -> None:
    import subprocess

    project = _project(tmp_path, TRACKED)
    build_dir = _build(project)
    # the script as run where aim is not installed; torch must not be imported by then
    wrapper = (
        "import importlib.util, runpy, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'aim' else real(name, *a)\n"
        "try:\n"
        f"    runpy.run_path({str(build_dir / 'train.py')!r}, run_name='__main__')\n"
        "finally:\n"
        "    print('torch imported:', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: output.trackers names trackers that are not installed: aim (pip install 'aim<4')" in proc.stderr
    assert "torch imported: False" in proc.stdout
    assert not (project / "runs").exists()
