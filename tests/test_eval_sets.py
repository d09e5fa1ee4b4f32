"""Named evaluation sources end to end: each `split = "eval"` source's loss is logged as
`eval_loss_<name>`, and `eval_loss` is the loss over every held-out token together.

A tiny Llama trains two steps through the generated script (slow); its final model is then
run here, with transformers' forward and torch's cross-entropy, over each evaluation file
of the data stage, one sequence at a time, and the logged losses must be those.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from test_sft import WORDS, _dialogs, _model, _train

pytestmark = pytest.mark.slow

RECIPE = """
[recipe]
name = "chat"
seed = 5

[model]
path = "./model"

[data]
seq_len = 96
packing = false
eval_fraction = {eval_fraction}

[[data.sources]]
path = "data/train.jsonl"
records = "{records}"

[[data.sources]]
name = "code"
path = "data/code.jsonl"
records = "{records}"
split = "eval"

[[data.sources]]
name = "mmlu_style"
path = "data/mmlu.jsonl"
records = "{records}"
split = "eval"

[optim]
lr = 1e-2

[schedule]
warmup = 1

[train]
micro_batch_size = 4
batch_size = 4
max_steps = 2
log_every = 1
eval_every = 0
eval_batches = 0
save_every = 0

[launch]
cpu = true
num_processes = 1
"""


def _texts(path: Path, n: int, seed: int) -> None:
    """Text documents of 3 to 60 words: unpadded lengths differ, so the token weights matter."""
    rng = random.Random(seed)
    path.write_text("".join(json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))}) + "\n" for _ in range(n)))


def _project(tmp_path: Path, model_dir: Path, records: str, eval_fraction: float) -> Path:
    project = tmp_path / records
    (project / "recipes").mkdir(parents=True)
    (project / "data").mkdir()
    shutil.copytree(model_dir, project / "model")
    for name, n, seed in (("train", 40, 1), ("code", 3, 2), ("mmlu", 9, 3)):
        if records == "text":
            _texts(project / "data" / f"{name}.jsonl", n, seed)
        else:
            _dialogs(project / "data" / f"{name}.jsonl", n)
    (project / "recipes" / "chat.toml").write_text(RECIPE.format(records=records, eval_fraction=eval_fraction))
    return project


def _loss(model, path: Path, examples: bool) -> tuple[float, int]:
    """The summed cross-entropy over the tokens the loss sees, and their count: one sequence at a time, no padding."""
    import torch
    import torch.nn.functional as F

    from recipec.runtime import stage

    sequences = []  # (ids, which of ids[1:] the loss sees)
    for row in stage.load_sequences(path).with_format(None):
        ids = torch.tensor(row["input_ids"])
        if examples:  # each example of the row (a packed row holds several), its supervised tokens
            starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(ids)]
            mask = torch.tensor(row["mask"])
            sequences += [(ids[a:b], mask[a + 1 : b] != 0) for a, b in zip(starts, starts[1:])]
        else:  # every token up to the padding
            n = sum(row["attention_mask"])
            sequences.append((ids[:n], torch.ones(n - 1, dtype=torch.bool)))
    total, count = 0.0, 0
    for ids, seen in sequences:
        with torch.no_grad():
            logits = model(input_ids=ids[None]).logits[0, :-1].double()
        total += F.cross_entropy(logits[seen], ids[1:][seen], reduction="sum").item()
        count += int(seen.sum())
    return total, count


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    _model(path)
    return path


@pytest.mark.parametrize(
    "records,eval_fraction",
    [("text", 0.1), ("messages", 0.0)],
    ids=["language-model-beside-the-held-out-fraction", "sft-named-sets-only"],
)
def test_each_eval_source_is_logged_and_eval_loss_is_their_token_weighted_mean(
    tmp_path: Path, model_dir: Path, records: str, eval_fraction: float
) -> None:
    from transformers import AutoModelForCausalLM

    project = _project(tmp_path, model_dir, records, eval_fraction)
    metrics = _train(project)
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in evals] == [0, 2]
    assert all({"eval_loss_code", "eval_loss_mmlu_style"} <= set(m) for m in evals)

    run = project / "runs" / "chat"
    record = json.loads((run / "run.json").read_text())
    entry = project / ".recipec" / "data" / record["data"]["cache_entry"]
    model = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    files = {"eval_loss_code": entry / "eval-code.arrow", "eval_loss_mmlu_style": entry / "eval-mmlu_style.arrow"}
    report = json.loads((run / "data_report.json").read_text())
    assert report["packing"] is False and report["eval_sets"]["mmlu_style"]["sequences"] == 9  # one per document
    if eval_fraction:
        files["held out"] = entry / "eval.arrow"
    else:
        assert report["eval"]["sequences"] == 0
    sums = {key: _loss(model, path, examples=records != "text") for key, path in files.items()}

    final = evals[-1]  # the final evaluation: the saved model's weights
    for key in ("eval_loss_code", "eval_loss_mmlu_style"):
        total, count = sums[key]
        assert final[key] == pytest.approx(total / count, rel=1e-5), key
    together = sum(t for t, _ in sums.values()) / sum(c for _, c in sums.values())
    assert final["eval_loss"] == pytest.approx(together, rel=1e-5)
    # the sets differ in size: an unweighted mean of their losses is another number
    unweighted = sum(t / c for t, c in sums.values()) / len(sums)
    assert abs(unweighted - together) > 1e-3

    assert record["final"]["eval_loss_code"] == final["eval_loss_code"]
    assert record["best"]["eval_loss_mmlu_style_step"] in (0, 2)
    assert set(record["data"]["eval_sets_sequences_sha256"]) == {"code", "mmlu_style"}


def test_a_preference_eval_source_is_logged_with_its_rewards(tmp_path: Path, model_dir: Path) -> None:
    """DPO, reference log-probabilities precomputed: eval_loss_exam is the mean DPO loss over the exam's pairs, and
    eval_loss over every held-out pair (each pair scored alone here); the rewards get the eval_exam_ prefix."""
    import torch
    from transformers import AutoModelForCausalLM

    from recipec.runtime import preference, stage
    from test_preference_training import _metrics, _pairs, _project as preference_project, _run

    extra = '\n[[data.sources]]\nname = "exam"\npath = "data/exam.jsonl"\nrecords = "preference"\nsplit = "eval"\n'
    recipe = preference_project(tmp_path / "dpo", model_dir, options='reference = "precomputed"', micro=4, steps=2, extra=extra)
    _pairs(recipe.parent.parent / "data" / "exam.jsonl", n=10)
    _run(recipe)
    final = [m for m in _metrics(recipe) if "eval_loss" in m][-1]
    assert {"eval_loss_exam", "eval_exam_reward_accuracy", "eval_exam_reward_margin", "eval_reward_margin"} <= set(final)

    project = recipe.parent.parent
    run = project / "runs" / "pref"
    entry = project / ".recipec" / "data" / json.loads((run / "run.json").read_text())["data"]["cache_entry"]
    policy_model = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    reference_model = AutoModelForCausalLM.from_pretrained(project / "model").eval()  # the model as the run started

    def losses(path: Path) -> list[float]:
        out = []
        for row in stage.load_sequences(path).with_format(None):
            batch = preference.collate([row], pad_id=0)
            with torch.no_grad():
                policy = preference.sequence_logps(policy_model, batch)
                reference = preference.sequence_logps(reference_model, batch)
            out.append(preference.objective_loss("dpo", {"beta": 0.1, "label_smoothing": 0.0}, policy, reference)[0].item())
        return out

    exam, held = losses(entry / "eval-exam.arrow"), losses(entry / "eval.arrow")
    assert len(exam) == 10 and len(held) > 0  # exam: micro-batches of 4, 4 and 2 pairs
    assert final["eval_loss_exam"] == pytest.approx(sum(exam) / len(exam), abs=1e-5)
    assert final["eval_loss"] == pytest.approx(sum(exam + held) / len(exam + held), abs=1e-5)
