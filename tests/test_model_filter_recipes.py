"""Model filters from a recipe: warnings about the scoring models' files, the lock's record of them, `recipec data`
and `recipec verify` when a scoring model changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipec.build import LOCK_FILE
from recipec.cli import main

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

PROSE = "the quick brown fox jumps over the lazy dog and then the dog runs after the fox into the woods"


def save_scorer(directory: Path, seed: int) -> None:
    """A tiny Llama with a tokenizer trained on the prose, saved as a scoring model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from recipec.runtime.tokenizer import train_bpe

    tok = train_bpe([f"{PROSE} {i}" for i in range(50)], 300)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)


@pytest.fixture
def project(write_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "corpus").mkdir()
    lines = [json.dumps({"text": " ".join(PROSE.split()[: 5 + i % 15]) + f" {i}"}) for i in range(40)]
    (tmp_path / "corpus" / "a.jsonl").write_text("".join(line + "\n" for line in lines))
    save_scorer(tmp_path / "scorer", 0)
    data = {"sources": [{"name": "web", "path": "corpus/*.jsonl"}], "seq_len": 16, "eval_fraction": 0.1}
    write_recipe(data=data, text='[[data.filters]]\ntype = "perplexity"\nmodel = "./scorer"\nrate = 0.5\nmax_tokens = 32')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str):
    return CliRunner().invoke(main, ["--no-color", *args])


def test_build_locks_the_scoring_model_data_runs_it_and_verify_sees_it_change(project: Path):
    assert cli("validate", "recipe.toml").output.count("warning") == 0
    built = cli("build", "recipe.toml")
    assert built.exit_code == 0, built.output
    lock = json.loads((project / "build" / "tiny" / LOCK_FILE).read_text())
    entry = lock["scorers"]["filters[0].model"]
    assert entry["path"] == "./scorer" and {"config.json", "model.safetensors", "tokenizer.json"} <= set(entry["files"])

    data = cli("data", "recipe.toml")
    assert data.exit_code == 0, data.output
    assert "perplexity of 40 scored (cpu, float32): min " in data.stdout
    assert "outside_rate: 20" in data.stdout

    assert cli("verify", "build/tiny").exit_code == 0
    save_scorer(project / "scorer", 1)  # another checkpoint at the same path
    drifted = cli("verify", "build/tiny")
    assert drifted.exit_code == 1
    assert "data changed: filters[0].model ./scorer: model.safetensors" in drifted.output


def test_scoring_models_the_stage_will_not_find_are_warnings_at_their_keys(project: Path):
    text = (project / "recipe.toml").read_text().replace('model = "./scorer"', 'model = "./nowhere"')
    color = '{type = "color_filter", prior_model = "org/prior-lm", conditional_model = "./scorer", rate = 0.25}'
    text = text.replace('path = "corpus/*.jsonl" }', f'path = "corpus/*.jsonl", filters = [{color}] }}')
    (project / "recipe.toml").write_text(text)
    out = cli("validate", "recipe.toml")
    assert out.exit_code == 0, out.output
    assert "warning: the scoring model ./nowhere is not a directory: the data stage loads it with from_pretrained" in out.output
    assert "warning: the scoring model org/prior-lm (revision main) is not in the local hub cache" in out.output
    assert "recipe.toml" in out.output and "prior_model = " in out.output  # located at its key

    assert cli("build", "recipe.toml").exit_code == 0
    scorers = json.loads((project / "build" / "tiny" / LOCK_FILE).read_text())["scorers"]
    assert set(scorers) == {"filters[0].model", "web.filters[0].prior_model", "web.filters[0].conditional_model"}
    assert "is not in the local hub cache" in scorers["web.filters[0].prior_model"]["error"]
    assert scorers["filters[0].model"]["error"].startswith("cannot read ./nowhere")
