"""The data stage on Ray (recipec/runtime/stage_ray.py): the same entry as the local executor, bit for bit."""

import copy
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("transformers")
ray = pytest.importorskip("ray")

from conftest import free_port  # noqa: E402
from recipec.runtime import stage, stage_ray  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402

from .chat_fixtures import CHATML, chat_tokenizer  # noqa: E402
from .test_stage import jsonl, prose, request  # noqa: E402
from .test_stage import tokenizer_dir as tokenizer_dir  # noqa: E402,F401  (the module's fixture)
from .test_hub import COMMIT_1, SUBSETS_CARD, publish, two_parquet_files  # noqa: E402
from .test_hub import cache as cache  # noqa: E402,F401  (an offline hub cache under tmp_path)
from .test_stage_examples import messages_rows  # noqa: E402
from .test_stage_examples import request as examples_request  # noqa: E402


EXACT = {"type": "exact_dedup", "normalize": True}
NEAR = {"type": "minhash_dedup", "shingle_size": 5, "num_perm": 64, "bands": 16, "threshold": 0.7, "seed": 1}
LENGTH = {"type": "length", "unit": "words", "min": 30, "max": None}
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def _ray_of_the_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def cluster(_ray_of_the_module):
    """A local Ray of two CPUs (two workers), shared by the module's tests until one stops it."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield


def near(i: int, n: int = 120) -> str:
    """A variant of prose(i, n) with every 40th word changed: a near duplicate of it."""
    return " ".join(w if k % 40 else "CHANGED" for k, w in enumerate(prose(i, n).split()))


def change(text: str, positions: list[int], word: str) -> str:
    words = text.split()
    for k in positions:
        words[k] = word
    return " ".join(words)


def corpus(tmp_path: pathlib.Path) -> list[dict]:
    """Two sources over several files, with planted exact duplicates (within and across files and sources),
    near duplicates, and short documents the length filter drops before dedup sees them."""
    first = prose(400, 120)
    second = change(first, [10, 50, 90], "CHANGED")  # near the first (0.78 of the signature agrees)
    third = change(second, [30, 70, 110], "ALTERED")  # near the second (0.75), not the first (0.55): kept
    for f in range(4):
        rows = [{"text": t} for t in (first, second, third)] if f == 3 else []
        for i in range(f * 30, f * 30 + 30):
            rows.append({"text": prose(i, 120)})
            if i % 7 == 0 and i > 0:
                rows.append({"text": prose(i - 1, 120).upper()})  # exact once normalised, of the previous one
            if i % 11 == 5:
                rows.append({"text": near(i - 3)})  # near, of an earlier one
            if i % 13 == 0:
                rows.append({"text": "too short to keep"})
        jsonl(tmp_path / "a" / f"part-{f}.jsonl", rows)
    jsonl(tmp_path / "b" / "one.jsonl", [{"text": prose(i, 120)} for i in (3, 200, 202, 45)] + [{"text": near(202)}])
    return [
        {"path": "a/*.jsonl", "name": "a", "filters": [LENGTH]},
        {"path": "b/*.jsonl", "name": "b", "filters": [EXACT]},
    ]


def entry_files(out) -> dict[str, str]:
    """sha256 of every sequence file of an entry."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.dir.glob("*.arrow"))}


def comparable(report: dict) -> dict:
    """The report without what depends on the executor and the clock."""
    r = copy.deepcopy(report)
    for key in ("timings", "num_proc", "executor", "ray"):
        r.pop(key, None)
    return r


def both(tmp_path, tokenizer_dir, sources, filters, **spec):
    """The entry of a local run and of a Ray run of the same request, in two cache directories."""
    local = request(tmp_path, tokenizer_dir, sources, filters, **spec)
    local["cache_dir"] = "cache-local"
    on_ray = dict(local, cache_dir="cache-ray", executor="ray", ray_address=None)
    return stage.run(local, log=lambda m: None), stage.run(on_ray, log=lambda m: None)


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_ray_gives_the_local_entry_byte_for_byte(cluster, tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.setattr(stage_ray, "SHARD_BYTES", 8000)  # several shards per file set
    monkeypatch.setattr(stage_ray, "TOKENIZE_CHARS", 10000)  # and several tokenize tasks per shard
    sources = corpus(tmp_path)
    local, on_ray = both(tmp_path, tokenizer_dir, sources, [EXACT, NEAR], eval_fraction=0.1, count_dropped_tokens=True)
    assert on_ray.dir.name == local.dir.name  # the same cache key
    assert entry_files(on_ray) == entry_files(local)
    assert comparable(on_ray.report) == comparable(local.report)
    r = on_ray.report
    assert r["executor"] == "ray" and r["ray"]["shards"] >= 4 and r["ray"]["partitions"] >= 2
    dropped = {f["label"]: f["docs_dropped"] for f in r["filters"]}
    # the planted ones: 10 short; in b, none of its own (its copies are of a); across sources,
    # 17 upper-cased copies and b's copies of a's documents 3 and 45; near: 11 variants, the second
    # of the chain (the third is near only the dropped second: kept) and b's of 202
    assert dropped == {"a.filters[0]": 10, "b.filters[0]": 0, "filters[0]": 17 + 2, "filters[1]": 11 + 1 + 1}
    reasons = [e["reason"] for f in r["filters"] for e in f["examples"] if e["reason"].startswith("duplicate")]
    assert reasons and all("a/part-" in x or "b/one.jsonl" in x for x in reasons)


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_a_worker_killed_mid_stage_is_retried_and_the_output_is_unchanged(cluster, tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.setattr(stage_ray, "SHARD_BYTES", 8000)
    marker = tmp_path / "killed"
    sources = corpus(tmp_path)
    local = request(tmp_path, tokenizer_dir, sources, [EXACT, NEAR])
    local["cache_dir"] = "cache-local"
    want = stage.run(local, log=lambda m: None)
    monkeypatch.setenv(stage_ray.KILL_ONCE, str(marker))
    try:
        got = stage.run(dict(local, cache_dir="cache-ray", executor="ray"), log=lambda m: None)
    finally:
        ray.shutdown()  # the next test starts a Ray whose workers were never killed
    assert marker.exists()  # a task died
    assert entry_files(got) == entry_files(want)
    assert comparable(got.report) == comparable(want.report)
    assert got.report["documents"] == want.report["documents"]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat-tok")
    chat_tokenizer(CHATML).save_pretrained(path)
    return str(path)


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_examples_on_ray_give_the_local_entry(cluster, tmp_path, chat_dir, monkeypatch):
    monkeypatch.setattr(stage_ray, "SHARD_BYTES", 2000)
    rows = messages_rows()
    jsonl(tmp_path / "m" / "1.jsonl", rows[:20] + rows[:3])  # three copies
    jsonl(tmp_path / "m" / "2.jsonl", rows[20:])
    source = {"path": "m/*.jsonl", "records": "messages", "filters": []}
    local = examples_request(tmp_path, chat_dir, [source], seq_len=128, max_length=60, overflow="drop", eval_fraction=0.1)
    local["spec"]["filters"] = [EXACT]
    want = stage.run(dict(local, cache_dir="cache-local"), log=lambda m: None)
    got = stage.run(dict(local, cache_dir="cache-ray", executor="ray"), log=lambda m: None)
    assert got.report["ray"]["shards"] >= 2
    assert entry_files(got) == entry_files(want)
    assert comparable(got.report) == comparable(want.report)
    assert got.report["filters"][0]["docs_dropped"] == 3
    assert got.report["examples"]["dropped"]  # some too long for max_length: dropped in the tokenize tasks


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_preference_pairs_with_margins_on_ray_give_the_local_entry(cluster, tmp_path, chat_dir, monkeypatch):
    """Preference pairs whose source names a margin field: the Ray stage's entry (its float32 margin column too) is
    the local stage's, byte for byte."""
    from .test_stage_preference import PAIRS

    monkeypatch.setattr(stage_ray, "SHARD_BYTES", 2000)
    jsonl(tmp_path / "p" / "1.jsonl", [{**r, "gap": i * 0.25 - 1} for i, r in enumerate(PAIRS[:15])])
    jsonl(tmp_path / "p" / "2.jsonl", [{**r, "gap": i * 0.5} for i, r in enumerate(PAIRS[15:])])
    source = {"path": "p/*.jsonl", "records": "preference", "fields": {"margin": "gap"}}
    local = examples_request(tmp_path, chat_dir, [source], seq_len=128, eval_fraction=0.1)
    want = stage.run(dict(local, cache_dir="cache-local"), log=lambda m: None)
    got = stage.run(dict(local, cache_dir="cache-ray", executor="ray"), log=lambda m: None)
    assert got.report["ray"]["shards"] >= 2
    assert entry_files(got) == entry_files(want)
    assert comparable(got.report) == comparable(want.report)
    import pyarrow as pa

    with pa.OSFile(str(got.dir / "train-0.arrow")) as f:
        margins = pa.ipc.open_stream(f).read_all().column("margin").to_pylist()
    assert len(set(margins)) > 10 and min(margins) == -1.0


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_mds_shards_on_ray_give_the_local_entry(cluster, tmp_path, chat_dir, monkeypatch):
    """MDS text shards and chat shards (tests/data/mds, written by mosaicml-streaming) read on Ray as locally."""
    import shutil

    monkeypatch.setattr(stage_ray, "SHARD_BYTES", 500)
    fixtures = REPO / "tests" / "data" / "mds"
    shutil.copytree(fixtures / "text_zstd", tmp_path / "text")
    shutil.copytree(fixtures / "chat" / "train", tmp_path / "chat")
    for name in ("text", "chat"):
        (tmp_path / name / "expected.json").unlink()
    for source, spec in (
        ({"path": "text", "filters": []}, dict(seq_len=16, eval_fraction=0.1)),
        ({"path": "chat", "records": "messages", "filters": []}, dict(seq_len=128, eval_fraction=0.0)),
    ):
        local = examples_request(tmp_path, chat_dir, [source], **spec)
        want = stage.run(dict(local, cache_dir=f"cache-local-{source['path']}"), log=lambda m: None)
        got = stage.run(dict(local, cache_dir=f"cache-ray-{source['path']}", executor="ray"), log=lambda m: None)
        assert got.report["ray"]["shards"] >= 2, source
        assert entry_files(got) == entry_files(want), source
        assert comparable(got.report) == comparable(want.report), source
        assert got.report["documents"] == want.report["documents"]


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_bad_data_in_a_shard_is_the_located_error_of_the_local_executor(cluster, tmp_path, tokenizer_dir):
    jsonl(tmp_path / "x" / "1.jsonl", [{"text": prose(1)}])
    (tmp_path / "x" / "2.jsonl").write_text(json.dumps({"text": prose(2)}) + "\n{not json\n")
    req = dict(request(tmp_path, tokenizer_dir, [{"path": "x/*.jsonl"}]), executor="ray")
    with pytest.raises(DataError, match=r"x/2\.jsonl:2"):
        stage.run(req, log=lambda m: None)


def test_without_ray_installed_the_stage_says_how_to_install_it(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    jsonl(tmp_path / "a.jsonl", [{"text": prose(1)}])
    req = dict(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}]), executor="ray")
    with pytest.raises(DataError, match=r"pip install 'recipec\[ray\]'"):
        stage.run(req, log=lambda m: None)


def _run_stage(tmp_path: pathlib.Path, req: dict, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(req))
    env = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "recipec.runtime.stage", str(path)], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_an_unreachable_cluster_is_a_clear_error(tmp_path, tokenizer_dir):
    jsonl(tmp_path / "a.jsonl", [{"text": prose(1)}])
    port = free_port()  # a port nothing listens on
    req = dict(request(tmp_path, tokenizer_dir, [{"path": "a.jsonl"}]), executor="ray", ray_address=f"127.0.0.1:{port}")
    done = _run_stage(tmp_path, req, {"RAY_ADDRESS": ""}, timeout=60)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: data.executor = \"ray\": cannot start or reach the Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def _stop_nodes(marker: str) -> None:
    """Stop the processes of the nodes this test started, found by the marker in their environment.

    ``ray stop`` would stop every Ray process of the machine, other clusters' too.
    """
    mine = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0"):
            mine.append(int(pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            time.sleep(2)


@pytest.mark.slow  # starts Ray or runs the stage twice: seconds
def test_two_nodes_on_the_loopback_address_share_the_work(tmp_path, tokenizer_dir):
    ray_bin = pathlib.Path(sys.executable).parent / "ray"
    port = free_port()
    temp = pathlib.Path("/tmp") / f"rayt-{os.getpid()}"  # short: the sockets' paths have a length limit
    marker = f"RECIPEC_TEST_RAY_NODES={uuid.uuid4().hex}"
    # the nodes and the stage on them without Ray's token authentication: a loopback cluster of one test
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="", RAY_AUTH_MODE="disabled")
    env.update([marker.split("=", 1)])
    common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    try:
        subprocess.run(
            [str(ray_bin), "start", "--head", "--port", str(port), f"--temp-dir={temp}", "--include-dashboard=false", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )
        subprocess.run(
            [str(ray_bin), "start", "--address", f"127.0.0.1:{port}", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )
        sources = corpus(tmp_path)
        req = request(tmp_path, tokenizer_dir, sources, [EXACT, NEAR], eval_fraction=0.1)
        # a tokenizer trained by the stage (on the driver, from the shard files), then shipped to the tasks
        req["tokenizer"] = {"train": {"kind": "bpe", "vocab_size": 300, "min_frequency": 2, "max_documents": None}}
        want = stage.run(dict(req, cache_dir="cache-local"), log=lambda m: None)
        on_ray = dict(req, cache_dir="cache-ray", executor="ray", ray_address=f"127.0.0.1:{port}")
        done = _run_stage(tmp_path, on_ray, {"RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"})
        assert done.returncode == 0, done.stderr[-3000:]
        got = stage.load_entry(pathlib.Path(done.stdout.strip().splitlines()[-1]))
        assert got.report["ray"]["nodes"] == 2  # tasks ran on both nodes
        assert got.report["tokenizer"]["trained"] and got.tokenizer_dir is not None
        assert entry_files(got) == entry_files(want)
        assert comparable(got.report) == comparable(want.report)
    finally:
        _stop_nodes(marker)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow  # runs the stage twice
def test_a_hub_source_and_a_token_bound_read_on_ray_as_locally(cluster, cache, tmp_path, tokenizer_dir, monkeypatch):
    # the tasks find the hub cache where the driver does: its settings reach them
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    publish(cache, "org/name", COMMIT_1, {**two_parquet_files(tmp_path), "README.md": SUBSETS_CARD.encode()})
    jsonl(tmp_path / "b" / "one.jsonl", [{"text": prose(i, 120)} for i in range(40)])
    jsonl(tmp_path / "b" / "two.jsonl", [{"text": prose(i, 120)} for i in range(40, 60)])
    sources = [{"hub": {"repo": "org/name", "subset": "en"}, "name": "hub"}, {"path": "b/*.jsonl", "name": "b", "max_tokens": 3000}]
    local, on_ray = both(tmp_path, tokenizer_dir, sources, [EXACT])
    assert entry_files(on_ray) == entry_files(local)
    assert comparable(on_ray.report) == comparable(local.report)
    documents = {s["label"]: s["documents"] for s in local.report["sources"]}
    assert documents["hub"] == 40 and 0 < documents["b"] < 40  # the bound stops b inside its first file
