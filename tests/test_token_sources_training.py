"""A recipe whose data is token ids already trains, and a continual run replays them: train.py on CPU (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import forkrun
from recipec.compiler import build
from test_training import _env

pytestmark = pytest.mark.slow

RECIPE = """
[recipe]
name = "tiny-tokens"
seed = 7

[model]
init = "llama"

[model.config]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 1
num_attention_heads = 2
max_position_embeddings = 64

[tokenizer]
path = "./tok"

[data]
seq_len = 32
eval_fraction = 0.1

[[data.sources]]
name = "ids"
path = "tokens/*.bin"
records = "tokens"
tokenizer = "./tok"
token_dtype = "uint16"
eos_token_id = 0
weight = 0.6

[[data.sources]]
name = "text"
path = "text.jsonl"
weight = 0.4

[optim]
lr = 1e-2

[train]
micro_batch_size = 4
batch_size = 8
max_steps = 4
log_every = 1
eval_every = 4
eval_batches = 1
save_every = 0

[launch]
cpu = true
"""

CHILD = """
[recipe]
name = "tiny-tokens-cpt"
seed = 7

[continual]
from = "runs/tiny-tokens"
replay = 0.5

[data]
seq_len = 32
eval_fraction = 0.1

[[data.sources]]
path = "text.jsonl"

[optim]
lr = 1e-2

[train]
micro_batch_size = 4
batch_size = 8
max_steps = 2
log_every = 1
eval_every = 2
eval_batches = 1
save_every = 0

[launch]
cpu = true
"""


def _train(project: Path, recipe: str) -> subprocess.CompletedProcess[str]:
    written, _ = build(project / "recipes" / recipe, (), project / "build" / Path(recipe).stem, project=project)
    proc = forkrun.run(
        [sys.executable, str(written.dir / "train.py")],
        env=_env(),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_a_bin_token_source_mixed_with_text_trains_and_a_continual_run_replays_it(tmp_path: Path) -> None:
    import numpy as np

    from recipec.runtime.tokenizer import train_bpe

    texts = [f"the mill grinds grain number {i} for the bakers of the valley, day {i % 7}." for i in range(120)]
    tokenizer = train_bpe(texts, 320)
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "tokens").mkdir()
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts[:80]]
    np.concatenate(ids).astype("<u2").tofile(tmp_path / "tokens" / "part-0.bin")
    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[80:]))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text(RECIPE)

    _train(tmp_path, "tiny.toml")
    run_dir = tmp_path / "runs" / "tiny-tokens"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert all(math.isfinite(x) for x in losses)
    assert all(math.isfinite(m["eval_loss"]) for m in metrics if "eval_loss" in m)
    report = json.loads((run_dir / "data_report.json").read_text())
    assert [s["label"] for s in report["sources"]] == ["ids", "text"]
    assert report["sources"][0]["documents"] == 80 and report["sources"][0]["files"] == 1
    segment = report["segments"][0]
    assert segment["asked"] == {"ids": 0.6, "text": 0.4}
    assert abs(segment["realised"]["ids"] - 0.6) < 0.05

    # a continual run on the text alone replays the parent's data, token source included,
    # through the parent's split and its own tokenizer (the parent's, saved with its model)
    (tmp_path / "recipes" / "child.toml").write_text(CHILD)
    proc = _train(tmp_path, "child.toml")
    assert "replay: " in proc.stdout + proc.stderr
    child = [json.loads(line) for line in (tmp_path / "runs" / "tiny-tokens-cpt" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(m["eval_loss_parent"]) for m in child if "eval_loss" in m)
    parent_data = [json.loads(p.read_text()) for p in (tmp_path / ".recipec" / "data").glob("*/data_report.json")]
    replayed = [r for r in parent_data if [s["label"] for s in r["sources"]] == ["ids", "text"] and r["segments"][0]["asked"] is None]
    assert replayed and replayed[0]["sources"][0]["documents"] == 80
