"""Instruction fine-tuning end to end: a pretrained chat model, conversation data, the loss on
the answers; the loss does not depend on how a step is split; a hub id from the local cache.

The model is a tiny Llama saved locally beside a ChatML tokenizer trained in a second; the
generated script really trains it on CPU (slow).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

import forkrun
from conftest import accelerate_launch
from recipec.compiler import build

from runtime.chat_fixtures import CHATML_MARKED, chat_tokenizer
from test_training import _env

pytestmark = pytest.mark.slow

WORDS = "the quick brown fox jumps over a lazy dog while seven small birds sing in the old oak tree".split()


def _model(directory: Path) -> None:
    """A tiny Llama and its ChatML tokenizer, as save_pretrained writes them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import torch

    tok = chat_tokenizer(CHATML_MARKED)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


def _dialogs(path: Path, n: int = 48) -> None:
    """Conversations of very uneven lengths: one to four turns, answers of 1 to 30 words."""
    rng = random.Random(3)
    rows = []
    for _ in range(n):
        messages = []
        for _ in range(rng.choice([1, 1, 1, 2, 4])):
            messages.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 8))) + "?"})
            messages.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.choice([1, 2, 30])))})
        rows.append({"messages": messages})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


RECIPE = """
[recipe]
name = "chat"
seed = 5

[model]
path = "{model}"

[data]
seq_len = 256
packing = {packing}
eval_fraction = 0.125

[[data.sources]]
path = "data/dialogs.jsonl"
records = "messages"

[optim]
lr = 1e-2

[schedule]
warmup = 1

[train]
micro_batch_size = {micro}
batch_size = 8
max_steps = 3
log_every = 1
eval_every = 0
eval_batches = 0
save_every = 0

[launch]
cpu = true
num_processes = {processes}
"""


def _project(tmp_path: Path, model: str, *, packing: bool = False, micro: int = 8, processes: int = 1) -> Path:
    (tmp_path / "recipes").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    _dialogs(tmp_path / "data" / "dialogs.jsonl")
    text = RECIPE.format(model=model, packing=str(packing).lower(), micro=micro, processes=processes)
    (tmp_path / "recipes" / "chat.toml").write_text(text)
    return tmp_path


def _train(project: Path, processes: int = 1, **env: str) -> list[dict]:
    written, _ = build(project / "recipes" / "chat.toml", (), project / "build" / "chat", project=project)
    script = str(written.dir / "train.py")
    if processes > 1:
        cmd = accelerate_launch(written.dir / "accelerate_config.yaml", script)
    else:
        cmd = [sys.executable, script]
    proc = forkrun.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    lines = (project / "runs" / "chat" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    _model(path)
    return path


@pytest.mark.parametrize(
    "variants",
    [
        (("4x2", 4, 1, None), ("2 processes", 4, 2, None), ("2 processes, eval micro-batches of 3", 4, 2, None)),
        (("8x1 padded to 64s", 8, 1, 64), ("4x2 padded to seq_len", 4, 1, 256)),
    ],
    ids=["split", "pad_to_multiple_of"],
)
def test_the_loss_does_not_depend_on_how_a_step_is_split(tmp_path: Path, model_dir: Path, variants) -> None:
    """Micro-batch 8 x 1, micro-batch 4 x 2 accumulated, and 2 processes x 4; micro-batches padded to a multiple of
    64 (data.pad_to_multiple_of) or to seq_len: the same loss at every step. The held-out loss is the same too,
    also in evaluation micro-batches of 3 (train.eval_micro_batch_size)."""
    runs, seen, evals = {}, {}, {}
    for name, micro, processes, multiple in (("8x1", 8, 1, None), *variants):
        project = tmp_path / name.replace(" ", "-")
        project.mkdir()
        shutil.copytree(model_dir, project / "model")
        _project(project, "./model", micro=micro, processes=processes)
        if multiple is not None:
            recipe = project / "recipes" / "chat.toml"
            recipe.write_text(recipe.read_text().replace("seq_len = 256\n", f"seq_len = 256\npad_to_multiple_of = {multiple}\n"))
        if "eval micro-batches" in name:
            recipe = project / "recipes" / "chat.toml"
            recipe.write_text(recipe.read_text().replace("[train]\n", "[train]\neval_micro_batch_size = 3\n"))
        metrics = _train(project, processes)
        steps = [m for m in metrics if "loss" in m]
        runs[name] = [m["loss"] for m in steps]
        evals[name] = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
        seen[name] = [m["supervised_tokens"] for m in steps]
        script = (project / "build" / "chat" / "train.py").read_text()
        assert f"\npad_to_multiple_of = {multiple} " in script  # the collate reads it (tests/test_explain_data.py)
        assert f"\neval_micro_batch_size = {3 if 'eval micro-batches' in name else micro} " in script
    assert len(runs["8x1"]) == 3 and len(evals["8x1"]) == 2
    for name, *_ in variants:
        assert runs[name] == pytest.approx(runs["8x1"], abs=1e-5, rel=0), name
        assert [s for s, _ in evals[name]] == [s for s, _ in evals["8x1"]], name
        assert [e for _, e in evals[name]] == pytest.approx([e for _, e in evals["8x1"]], abs=1e-5, rel=0), name
        # the supervised tokens trained on so far: the same count whoever counted them
        assert seen[name] == seen["8x1"] and 0 < seen["8x1"][0] < seen["8x1"][1] < seen["8x1"][2]


def test_packed_and_unpacked_start_from_the_same_loss(tmp_path: Path, model_dir: Path) -> None:
    """Step 1's loss (the untrained model on the first batch's examples) is the same packed or not."""
    losses = {}
    for packing in (False, True):
        project = tmp_path / f"packing-{packing}"
        project.mkdir()
        shutil.copytree(model_dir, project / "model")
        _project(project, "./model", packing=packing, micro=8)
        metrics = _train(project)
        losses[packing] = metrics
        report = json.loads((project / "runs" / "chat" / "data_report.json").read_text())
        assert report["examples"]["dropped"] == {}
        assert report["examples"]["supervised_tokens"] > 0
        if packing:
            assert report["segments"][0]["sequences"] < report["segments"][0]["examples"]
            assert 0.5 < report["examples"]["packing_efficiency"][0] <= 1
    # the eval loss at step 0 covers every held-out example either way: the same number
    evals = {p: next(m["eval_loss"] for m in ms if "eval_loss" in m) for p, ms in losses.items()}
    assert evals[True] == pytest.approx(evals[False], abs=1e-5)


def _hub_cache(cache: Path, name: str, model_dir: Path) -> Path:
    """A Hugging Face cache holding `model_dir` as the hub repo tiny-org/<name>, as a download leaves it."""
    commit = hashlib.sha1(name.encode()).hexdigest()
    repo = cache / f"models--tiny-org--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    return cache


def test_a_hub_id_in_the_local_cache_trains_offline(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id read from the cache, offline. The build (which reads the same cache) locks the commit refs/main is at;
    main moves to another commit before the run: the script warns, and run.json records the commit it read."""
    cache = _hub_cache(tmp_path / "hub", "tiny-chat", model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    project = tmp_path / "project"
    project.mkdir()
    _project(project, "tiny-org/tiny-chat")
    written, _ = build(project / "recipes" / "chat.toml", (), project / "build" / "chat", project=project)
    built = hashlib.sha1(b"tiny-chat").hexdigest()
    assert json.loads((written.dir / "recipe.lock.json").read_text())["model"] == {"path": "tiny-org/tiny-chat", "revision": "main", "commit": built}
    repo = cache / "models--tiny-org--tiny-chat"
    moved = hashlib.sha1(b"moved").hexdigest()
    shutil.copytree(repo / "snapshots" / built, repo / "snapshots" / moved)
    (repo / "refs" / "main").write_text(moved)
    proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(HF_HUB_CACHE=str(cache)), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert f"warning: model.path tiny-org/tiny-chat (revision main) is at commit {moved} now; the lock recorded {built} when the script was built" in proc.stdout
    run = json.loads((project / "runs" / "chat" / "run.json").read_text())
    assert run["model"] == {"path": "tiny-org/tiny-chat", "revision": "main", "commit": moved}
    metrics = [json.loads(line) for line in (project / "runs" / "chat" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    saved = project / "runs" / "chat" / "model"
    assert "generation" in (saved / "chat_template.jinja").read_text()


def test_a_local_model_written_after_the_build_is_named_and_its_digests_recorded(tmp_path: Path, model_dir: Path) -> None:
    """A local model: the lock holds each file's sha256; a file rewritten and one added between build and run are
    named by the script's warning (its main process hashes the files beside the training), and run.json records
    the digests it read."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(model_dir, project / "model")
    _project(project, "./model")
    written, _ = build(project / "recipes" / "chat.toml", (), project / "build" / "chat", project=project)
    locked = json.loads((written.dir / "recipe.lock.json").read_text())["model"]["files"]
    config = project / "model" / "config.json"
    config.write_text(config.read_text().replace("{", '{\n  "recipec_note": "edited",', 1))
    (project / "model" / "notes.txt").write_text("added after the build")
    proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert (
        "warning: the model's files are not those the lock recorded when the script was built: config.json, "
        "notes.txt (new) (run.json records the digests read now)"
    ) in proc.stdout
    run = json.loads((project / "runs" / "chat" / "run.json").read_text())
    now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (project / "model").iterdir() if p.is_file()}
    assert run["model"] == {"path": "./model", "files": now}
    assert now != locked and {k: v for k, v in now.items() if k not in ("config.json", "notes.txt")} == {
        k: v for k, v in locked.items() if k != "config.json"
    }


def test_packed_examples_on_a_model_type_that_crosses_them_are_refused(tmp_path: Path) -> None:
    """OPT builds its attention mask over the whole row, not from position ids (recipec.model_types.CROSSES_PACKED):
    packed examples would see one another. A local model is refused by the compiler, a hub id (whose config is not
    read at compile time) by the script, before any step; unpacked, the same model trains."""
    from transformers import OPTConfig, OPTForCausalLM

    import torch

    from recipec.diagnostics import RecipeError

    model = tmp_path / "opt"
    tok = chat_tokenizer(CHATML_MARKED)
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                       word_embed_proj_dim=32, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    OPTForCausalLM(config).save_pretrained(model)
    tok.save_pretrained(model)
    local = tmp_path / "local"
    local.mkdir()
    shutil.copytree(model, local / "model")
    _project(local, "./model", packing=True)
    with pytest.raises(RecipeError, match='model type "opt" does not keep the sequences of a packed row apart'):
        build(local / "recipes" / "chat.toml", (), local / "build" / "chat", project=local)
    cache = _hub_cache(tmp_path / "hub", "tiny-opt", model)
    project = tmp_path / "project"
    project.mkdir()
    _project(project, "tiny-org/tiny-opt", packing=True)
    written, _ = build(project / "recipes" / "chat.toml", (), project / "build" / "chat", project=project)
    proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(HF_HUB_CACHE=str(cache)), capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0 and 'model type "opt" does not keep the sequences of a packed row apart' in proc.stderr
    assert not (project / "runs" / "chat" / "metrics.jsonl").exists() or "loss" not in (project / "runs" / "chat" / "metrics.jsonl").read_text()
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    _project(unpacked, "tiny-org/tiny-opt", packing=False)
    assert [m["step"] for m in _train(unpacked, HF_HUB_CACHE=str(cache)) if "loss" in m] == [1, 2, 3]


def test_a_named_eval_source_and_generations_at_each_evaluation(tmp_path: Path, model_dir: Path) -> None:
    """A `split = "eval"` source is held out whole; each evaluation writes greedy answers to held-out prompts."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(model_dir, project / "model")
    _project(project, "./model")
    _dialogs(project / "data" / "eval.jsonl", n=6)
    recipe = project / "recipes" / "chat.toml"
    text = recipe.read_text().replace("eval_fraction = 0.125", "eval_fraction = 0.0")
    text = text.replace("eval_batches = 0", "eval_batches = 0\neval_generations = 3\nmax_new_tokens = 5")
    text += '\n[[data.sources]]\nname = "exam"\npath = "data/eval.jsonl"\nrecords = "messages"\nsplit = "eval"\n'
    recipe.write_text(text)
    metrics = _train(project)
    report = json.loads((project / "runs" / "chat" / "data_report.json").read_text())
    assert report["documents"]["eval"] == 6 and report["documents"]["train"] == 48
    assert report["segments"][0]["sources"] == ["sources[0]"]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [0, 3]
    lines = [json.loads(line) for line in (project / "runs" / "chat" / "generations.jsonl").read_text().splitlines()]
    assert [g["step"] for g in lines] == [0, 0, 0, 3, 3, 3]
    assert all(g["prompt"].endswith("<|im_start|>assistant\n") and isinstance(g["ended"], bool) for g in lines)


def test_lora_on_examples_with_new_tokens_resumes_bitwise(tmp_path: Path, model_dir: Path) -> None:
    """Killed after its step-2 checkpoint and resumed: the weights and the log of an uninterrupted run."""
    from test_training import KILLER

    runs = {}
    for name in ("straight", "killed"):
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(model_dir, project / "model")
        _project(project, "./model", packing=True, micro=4)
        recipe = project / "recipes" / "chat.toml"
        text = recipe.read_text().replace("max_steps = 3", "max_steps = 4").replace("save_every = 0", "save_every = 2")
        text = text.replace('[tokenizer]\n', '')
        text += '\n[tokenizer]\nspecial_tokens = ["<|im_start|>", "<|im_end|>", "<|tool|>"]\n'
        text += '\n[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj", "v_proj"]\ndropout = 0.1\n'
        recipe.write_text(text)
        written, _ = build(recipe, (), project / "build" / "chat", project=project)
        if name == "killed":
            killer = tmp_path / "killer.py"
            killer.write_text(KILLER)
            proc = forkrun.run(
                [sys.executable, str(killer), str(written.dir), "2", "after-commit"], env=_env(), capture_output=True, text=True, timeout=900
            )
            assert proc.returncode == -9, proc.stderr[-3000:]
        proc = forkrun.run([sys.executable, str(written.dir / "train.py")], env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-6000:]
        if name == "killed":
            assert "at step 2" in proc.stdout + proc.stderr
        assert "1 new tokens, so embed_tokens, lm_head train too" in proc.stdout + proc.stderr
        runs[name] = project / "runs" / "chat"
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    metrics = {k: strip([json.loads(x) for x in (v / "metrics.jsonl").read_text().splitlines()]) for k, v in runs.items()}
    assert metrics["killed"] == metrics["straight"]
    from safetensors.torch import load_file

    import torch

    a = load_file(str(runs["straight"] / "model" / "adapter_model.safetensors"))
    b = load_file(str(runs["killed"] / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any("embed_tokens" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_explain_data_computes_the_steps_and_schedule_that_train_py_runs(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With train.epochs the run's length waits for the data: `explain --data` lays out the schedule
    train.py then writes (schedule.csv), from the cache entry train.py then reuses."""
    from click.testing import CliRunner

    from recipec.cli import main

    shutil.copytree(model_dir, tmp_path / "model")
    _project(tmp_path, "./model", micro=3)
    recipe = tmp_path / "recipes" / "chat.toml"
    # 42 training examples in steps of 6: every epoch trains on each once
    recipe.write_text(recipe.read_text().replace("max_steps = 3", "epochs = 2").replace("batch_size = 8", "batch_size = 6"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--no-color", "explain", str(recipe), "--data", "--json", "--lr-csv", "lr.csv"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])["data"]
    [segment] = data["segments"]
    assert data["padding"] == "longest" and 0 < segment["slot_share"] < 1
    assert segment["rows"] == 42 and data["computed"]["steps_per_epoch"] == 7
    metrics = _train(tmp_path)
    steps = [m for m in metrics if "loss" in m]
    assert steps[-1]["step"] == data["computed"]["max_steps"] == 14
    # the tokens the loss saw, counted by the training loop from the labels, are the data stage's masks' count
    assert steps[-1]["supervised_tokens"] == 2 * segment["supervised_tokens"] > 0
    assert all(m["supervised_tokens_per_s"] > 0 for m in steps)
    assert (tmp_path / "lr.csv").read_text() == (tmp_path / "runs" / "chat" / "schedule.csv").read_text()
    record = json.loads((tmp_path / "runs" / "chat" / "run.json").read_text())
    assert record["data"]["cache_entry"] == Path(data["entry"]).name == data["key"][:32]  # the entry train.py read


def test_neftune_adds_noise_in_training_and_none_in_evaluation(tmp_path: Path, model_dir: Path) -> None:
    """train.neftune_noise_alpha: the held-out loss before the first step is the plain run's (no noise in evaluation),
    and the first step's loss, on the same batch, is not (the noise took part)."""
    runs = {}
    for name, extra in (("plain", ""), ("neftune", "neftune_noise_alpha = 15.0\n")):
        project = tmp_path / name
        project.mkdir()
        shutil.copytree(model_dir, project / "model")
        _project(project, "./model")
        recipe = project / "recipes" / "chat.toml"
        recipe.write_text(recipe.read_text().replace("[train]\n", "[train]\n" + extra))
        runs[name] = _train(project)
    first_eval = {n: next(m["eval_loss"] for m in ms if "eval_loss" in m) for n, ms in runs.items()}
    first_loss = {n: next(m["loss"] for m in ms if "loss" in m) for n, ms in runs.items()}
    assert first_eval["neftune"] == first_eval["plain"]
    assert first_loss["neftune"] != pytest.approx(first_loss["plain"], abs=1e-4)
