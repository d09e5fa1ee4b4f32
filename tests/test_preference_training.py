"""Preference training end to end: the generated script trains DPO and KTO on pairs rendered
with a chat template; the loss of a step does not depend on how it is split over micro-batches
and processes; a LoRA run with precomputed reference log-probabilities, killed after a
checkpoint, resumes to the same weights bit for bit.

The model is the tiny Llama and ChatML tokenizer of tests/test_sft.py; training runs on CPU (slow).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import forkrun
from conftest import accelerate_launch
from recipec.compiler import build

from test_sft import WORDS, _env, _model

pytestmark = pytest.mark.slow

RECIPE = """
[recipe]
name = "pref"
seed = 5

[model]
path = "./model"

[preference]
objective = "{objective}"
{options}

[data]
seq_len = 128
eval_fraction = 0.125

[[data.sources]]
path = "data/pairs.jsonl"
records = "{records}"

[optim]
lr = 1e-2

[schedule]
warmup = 1

[train]
micro_batch_size = {micro}
batch_size = 8
max_steps = {steps}
log_every = 1
eval_every = 0
save_every = {save_every}

[launch]
cpu = true
num_processes = {processes}
"""


def _pairs(path: Path, *, unpaired: bool = False, n: int = 72) -> None:
    rng = random.Random(3)
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 8))) + "?"}]
        good, bad = (" ".join(rng.choices(WORDS, k=rng.choice([1, 4, 12]))) for _ in range(2))
        if unpaired:
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": good}], "label": i % 3 != 0})
        else:
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": bad}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    _model(path)
    return path


def _project(root: Path, model_dir: Path, *, objective: str = "dpo", options: str = "", micro: int = 8, processes: int = 1,
             steps: int = 3, save_every: int = 0, extra: str = "") -> Path:
    root.mkdir(parents=True)
    shutil.copytree(model_dir, root / "model")
    (root / "recipes").mkdir()
    (root / "data").mkdir()
    unpaired = objective in ("kto", "apo_zero_unpaired")
    _pairs(root / "data" / "pairs.jsonl", unpaired=unpaired)
    text = RECIPE.format(
        objective=objective, options=options, records="unpaired_preference" if unpaired else "preference",
        micro=micro, processes=processes, steps=steps, save_every=save_every,
    )
    recipe = root / "recipes" / "pref.toml"
    recipe.write_text(text + extra)
    return recipe


def _with_generations(recipe: Path, n: int = 3) -> Path:
    """Greedy generations from n held-out prompts at each evaluation (at the start and the end here)."""
    recipe.write_text(recipe.read_text().replace("eval_every = 0", f"eval_every = 0\neval_generations = {n}\nmax_new_tokens = 6"))
    return recipe


def _generations(recipe: Path) -> list[dict]:
    lines = (recipe.parent.parent / "runs" / "pref" / "generations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _run(recipe: Path, processes: int = 1) -> subprocess.CompletedProcess:
    project = recipe.parent.parent
    written, _ = build(recipe, (), project / "build" / "pref", project=project)
    script = str(written.dir / "train.py")
    cmd = [sys.executable, script]
    if processes > 1:
        cmd = accelerate_launch(written.dir / "accelerate_config.yaml", script)
    proc = forkrun.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _metrics(recipe: Path) -> list[dict]:
    lines = (recipe.parent.parent / "runs" / "pref" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


EXAM = '\n[[data.sources]]\nname = "exam"\npath = "data/exam.jsonl"\nrecords = "{records}"\nsplit = "eval"\n'


def _with_exam(recipe: Path, *, unpaired: bool = False, n: int = 7) -> Path:
    """An evaluation source of n pairs (KTO: examples) beside the 9 held-out rows of eval_fraction: neither splits
    into whole micro-batches of 4 over 2 processes."""
    recipe.write_text(recipe.read_text() + EXAM.format(records="unpaired_preference" if unpaired else "preference"))
    _pairs(recipe.parent.parent / "data" / "exam.jsonl", unpaired=unpaired, n=n)
    return recipe


ROUNDING = 2e-7
"""The relative difference float32 rounding may leave beside the absolute 1e-5 the comparisons allow: a sum of
log-probabilities near -180 is a float32, and float32 values there are 1.5e-5 apart (summed in another order,
one process and two differ by that much)."""


def _held_out_differences(runs: dict[str, list[dict]], reference: str) -> dict[str, dict[str, float]]:
    """Each run's largest |difference| from the reference run's, per held-out metric (every eval_ key but timings),
    less the float32 rounding of the reference's value (ROUNDING of its size); NaN where either is NaN."""
    evals = {name: [m for m in ms if "eval_loss" in m] for name, ms in runs.items()}
    keys = sorted(k for k in evals[reference][0] if k.startswith("eval_") and not k.endswith("_per_s"))
    out = {}
    for name, ms in evals.items():
        assert len(ms) == 2 and all(set(keys) <= set(m) for m in ms), name  # at step 0 and at the end
        out[name] = {k: max((abs(a[k] - b[k]) - ROUNDING * abs(b[k]) for a, b in zip(ms, evals[reference])), key=lambda d: math.inf if math.isnan(d) else d) for k in keys}
    return out


def test_a_dpo_step_does_not_depend_on_how_it_is_split(tmp_path: Path, model_dir: Path) -> None:
    """Micro-batch 8 x 1, 4 x 2 accumulated, and 2 processes x 4 (DDP): the same loss and rewards at every step;
    also with the reference log-probabilities precomputed by the two processes (each scores a share). The held-out
    pairs (9, and an evaluation source of 7) do not split into whole micro-batches of 4 over 2 processes: filled up
    with pairs that count for nothing, every held-out metric is the one of one process."""
    runs, generations = {}, {}
    configs = (("8x1", 8, 1, ""), ("4x2", 4, 1, ""), ("2-processes", 4, 2, ""), ("2-processes-precomputed", 4, 2, 'reference = "precomputed"'),
               ("4x2-padded-to-seq_len", 4, 1, ""))
    for name, micro, processes, options in configs:
        recipe = _with_generations(_with_exam(_project(tmp_path / name, model_dir, micro=micro, processes=processes, options=options)))
        if name.endswith("padded-to-seq_len"):  # data.pad_to_multiple_of = seq_len: every micro-batch of pairs 128 or 256 wide
            recipe.write_text(recipe.read_text().replace("seq_len = 128\n", "seq_len = 128\npad_to_multiple_of = 128\n"))
        proc = _run(recipe, processes)
        assert "9 held out" in proc.stdout + proc.stderr and "exam 7 sequences" in proc.stdout + proc.stderr
        runs[name] = _metrics(recipe)
        generations[name] = _generations(recipe)
    steps = {name: [m for m in ms if "loss" in m] for name, ms in runs.items()}
    assert len(steps["8x1"]) == 3
    assert steps["8x1"][-1]["reward_margin"] != 0  # it trained: the policy left the reference
    held_out = _held_out_differences(runs, "8x1")
    print("max |difference| from 8x1 per held-out metric:", {n: max(d.values()) for n, d in held_out.items()})
    assert {"eval_loss_exam", "eval_exam_reward_margin", "eval_reward_accuracy", "eval_logps_rejected"} <= set(held_out["8x1"])
    for name in ("4x2", "2-processes", "2-processes-precomputed", "4x2-padded-to-seq_len"):
        for key in ("loss", "rewards_chosen", "rewards_rejected", "reward_margin", "logps_chosen"):
            assert [m[key] for m in steps[name]] == pytest.approx([m[key] for m in steps["8x1"]], abs=1e-5, rel=ROUNDING), (name, key)
        # at step 1 the policy is the reference: every margin is 0 up to rounding (a precomputed reference scored
        # the rows in other micro-batches, padded otherwise), and the accuracy would count the sign of that
        # rounding; from step 2 the margins are the policy's
        assert [m["reward_accuracy"] for m in steps[name][1:]] == [m["reward_accuracy"] for m in steps["8x1"][1:]], name
        assert generations[name] == generations["8x1"], name  # written once, by the main process
        assert {k: d for k, d in held_out[name].items() if not d <= 1e-5} == {}, name  # NaN included
    lines = generations["8x1"]
    assert [g["step"] for g in lines] == [0, 0, 0, 3, 3, 3]  # 3 held-out prompts at the start and at the end
    assert lines[0]["generated"] != lines[3]["generated"]  # the policy moved
    held_out = [json.loads(x) for x in (tmp_path / "8x1" / "data" / "pairs.jsonl").read_text().splitlines()]
    for g in lines:  # each line's prompt, chosen and rejected completions come from one held-out pair
        sides = {
            (p["chosen"][0]["content"] + "<|im_end|>\n", p["rejected"][0]["content"] + "<|im_end|>\n")
            for p in held_out
            if g["prompt"] == f"<|im_start|>user\n{p['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        }
        assert (g["chosen"], g["rejected"]) in sides and isinstance(g["ended"], bool)
    assert len({g["prompt"] for g in lines}) == 3  # distinct prompts


@pytest.mark.parametrize("objective", ["kto", "orpo", "reward"])
def test_held_out_metrics_over_two_processes_are_those_of_one(objective: str, tmp_path: Path, model_dir: Path) -> None:
    """KTO, ORPO and a reward model over 2 processes x micro-batch 4 (DDP) and 1 process x 4: the 9 held-out rows and the 7 of an
    evaluation source do not split into whole micro-batches of both processes; filled up with rows that count for
    nothing, every held-out metric is the one of one process. KTO's KL estimate pairs each prompt with another row's
    completion within a micro-batch: a held-out micro-batch's own, its filler rows apart. ORPO and the reward model
    train as one process does; KTO's training KL estimate is the mean over the micro-batch of every process (see tests/test_deepspeed.py)."""
    runs = {}
    for name, processes in (("one", 1), ("two", 2)):
        recipe = _with_exam(_project(tmp_path / name, model_dir, objective=objective, micro=4, processes=processes, steps=2), unpaired=objective == "kto")
        _run(recipe, processes)
        runs[name] = _metrics(recipe)
    held_out = _held_out_differences(runs, "one")
    print(objective, "max |difference| per held-out metric:", {k: f"{v:.1e}" for k, v in held_out["two"].items()})
    wanted = {"eval_loss", "eval_loss_exam", "eval_reward_margin", "eval_exam_rewards_chosen"}
    wanted |= set() if objective == "reward" else {"eval_logps_rejected"}  # a reward model has no log-probabilities
    assert wanted | ({"eval_kl", "eval_exam_kl"} if objective == "kto" else {"eval_reward_accuracy"}) <= set(held_out["two"])
    assert {k: d for k, d in held_out["two"].items() if not d <= 1e-5} == {}  # NaN included
    if objective == "kto":
        assert all(m["eval_kl"] > 0 for m in runs["one"] if "eval_kl" in m and m["step"] > 0)  # the KL term takes part
    else:
        steps = {name: [m for m in ms if "loss" in m] for name, ms in runs.items()}
        for key in ("loss", "rewards_chosen", "rewards_rejected", "reward_margin") + (() if objective == "reward" else ("logps_chosen",)):
            assert [m[key] for m in steps["two"]] == pytest.approx([m[key] for m in steps["one"]], abs=1e-5, rel=ROUNDING), key


def _killed_after_the_step_2_checkpoint(build_dir: Path, tmp_path: Path) -> None:
    """Run the build's train.py and SIGKILL it once its step-2 checkpoint is committed."""
    from test_training import KILLER

    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    proc = forkrun.run([sys.executable, str(killer), str(build_dir), "2", "after-commit"], env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == -9, proc.stderr[-3000:]


def test_lora_with_precomputed_reference_resumes_bitwise(tmp_path: Path, model_dir: Path) -> None:
    """LoRA, reference log-probabilities precomputed (adapter disabled): killed after its step-2 checkpoint and
    resumed, the weights and log of an uninterrupted run; the resumed run reads the stored reference back."""
    from safetensors.torch import load_file

    import torch

    peft = '\n[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj", "v_proj"]\ndropout = 0.1\n'
    runs = {}
    for name in ("straight", "killed"):
        recipe = _project(tmp_path / name, model_dir, options='reference = "precomputed"', micro=4, steps=4, save_every=2, extra=peft)
        _with_generations(recipe, 2)
        project = recipe.parent.parent
        written, _ = build(recipe, (), project / "build" / "pref", project=project)
        if name == "killed":
            _killed_after_the_step_2_checkpoint(written.dir, tmp_path)
            stored = sorted(p.name for p in (project / ".recipec" / "data").glob("*/reference-*.pt"))
            assert len(stored) == 2  # train and eval, written before the first step
        proc = _run(recipe)
        if name == "killed":
            assert "at step 2" in proc.stdout + proc.stderr
        runs[name] = project / "runs" / "pref"
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    metrics = {k: strip([json.loads(x) for x in (v / "metrics.jsonl").read_text().splitlines()]) for k, v in runs.items()}
    assert metrics["killed"] == metrics["straight"]
    generations = {k: (v / "generations.jsonl").read_text() for k, v in runs.items()}
    assert generations["killed"] == generations["straight"]  # step 0 before the kill, step 4 after the resume
    assert metrics["straight"][0]["eval_reward_margin"] == 0  # step 0: the policy is the reference
    a = load_file(str(runs["straight"] / "model" / "adapter_model.safetensors"))
    b = load_file(str(runs["killed"] / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kto_trains_on_labelled_completions(tmp_path: Path, model_dir: Path) -> None:
    recipe = _project(tmp_path / "kto", model_dir, objective="kto", options="undesirable_weight = 2.0", micro=4, steps=4)
    _run(_with_generations(recipe, 4))
    steps = [m for m in _metrics(recipe) if "loss" in m]
    assert len(steps) == 4
    assert all("kl" in m and m["kl"] >= 0 for m in steps)
    assert steps[-1]["rewards_chosen"] != 0 and "reward_accuracy" not in steps[-1]
    held_out = [json.loads(x) for x in (recipe.parent.parent / "data" / "pairs.jsonl").read_text().splitlines()]
    lines = _generations(recipe)
    assert [g["step"] for g in lines] == [0] * 4 + [4] * 4
    for g in lines:  # the example's completion and its label beside the generated answer
        rows = {
            (r["completion"][0]["content"] + "<|im_end|>\n", r["label"])
            for r in held_out
            if g["prompt"] == f"<|im_start|>user\n{r['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        }
        assert (g["completion"], g["desirable"]) in rows and "chosen" not in g


def test_tr_dpo_moves_the_reference_and_resumes_bitwise(tmp_path: Path, model_dir: Path) -> None:
    """TR-DPO (reference_sync_every 2, alpha 0.25) on a live copy: the step-2 checkpoint keeps the reference, which is
    the starting weights times 0.75 plus the policy's at step 2 times 0.25, as TRL's SyncRefModelCallback computes it;
    the losses after the sync differ from a run without it; and killed after that checkpoint and resumed, the run
    logs and saves what an uninterrupted one does."""
    from safetensors.torch import load_file

    import torch

    sync = "reference_sync_every = 2\nreference_sync_alpha = 0.25"
    runs = {}
    for name, options in (("straight", sync), ("killed", sync), ("plain", "")):
        recipe = _project(tmp_path / name, model_dir, options=options, micro=4, steps=4, save_every=2)
        project = recipe.parent.parent
        written, plan = build(recipe, (), project / "build" / "pref", project=project)
        if name == "killed":
            _killed_after_the_step_2_checkpoint(written.dir, tmp_path)
        proc = _run(recipe)
        if name == "killed":
            assert "at step 2" in proc.stdout + proc.stderr
        runs[name] = project / "runs" / "pref"
    assert plan.get("reference_sync_every") is None  # the plain run
    ckpt = runs["straight"] / "checkpoints" / "step_00000002"
    (saved,) = ckpt.glob("custom_checkpoint_*.pkl")
    reference = torch.load(saved, weights_only=True)
    policy = load_file(str(ckpt / "model.safetensors"))
    start = load_file(str(model_dir / "model.safetensors"))
    assert reference.keys() >= policy.keys() and any(not torch.equal(policy[k], start[k]) for k in policy)
    for k in policy:
        assert torch.equal(reference[k], start[k].clone().mul_(0.75).add_(policy[k], alpha=0.25)), k
    strip = lambda ms: [{k: v for k, v in m.items() if not k.endswith("_per_s")} for m in ms]  # noqa: E731 (timings differ)
    metrics = {k: strip([json.loads(x) for x in (v / "metrics.jsonl").read_text().splitlines()]) for k, v in runs.items()}
    assert metrics["killed"] == metrics["straight"]
    steps = {k: [m for m in v if "loss" in m] for k, v in metrics.items()}
    assert [m["loss"] for m in steps["straight"][:2]] == [m["loss"] for m in steps["plain"][:2]]  # the same up to the sync
    assert steps["straight"][2]["loss"] != pytest.approx(steps["plain"][2]["loss"], abs=1e-6)
    a, b = (load_file(str(runs[k] / "model" / "model.safetensors")) for k in ("straight", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_apo_zero_unpaired_trains_with_a_precomputed_reference(tmp_path: Path, model_dir: Path) -> None:
    """APO-zero unpaired through the script on KTO's labelled completions, with the reference's log-probabilities
    computed before the first step (which KTO's KL pairs rule out): at step 1 every log-ratio is 0, so each
    example's loss is 1 - sigmoid(0) or sigmoid(0), one half, and the loss is half the mean weight whatever the
    labels; then the model moves, and no KL estimate is logged."""
    recipe = _project(tmp_path / "apo", model_dir, objective="apo_zero_unpaired", options='reference = "precomputed"', micro=4, steps=3)
    _run(recipe)
    steps = [m for m in _metrics(recipe) if "loss" in m]
    assert len(steps) == 3 and not any("kl" in m for m in steps)
    assert steps[0]["loss"] == pytest.approx(0.5, abs=1e-6) and steps[0]["rewards_chosen"] == pytest.approx(0, abs=1e-6)
    assert steps[2]["loss"] != pytest.approx(0.5, abs=1e-4) and steps[2]["rewards_chosen"] != 0
    assert "reward_accuracy" not in steps[-1]
    (saved,) = (tmp_path / "apo").rglob("reference-*-train-0.pt")
    import torch

    assert torch.load(saved, weights_only=True).shape == (63, 2)  # the 72 examples less the 9 held out: completion, no rejected side


@pytest.mark.parametrize(
    ("objective", "options", "first"),
    [("apo_zero", "", 1.0), ("sppo_hard", "beta = 0.25", 8.0), ("discopop", 'divergence = "forward_kl"', 0.5 * math.log(2) + 0.5)],
)
def test_trl_loss_types_train_through_the_script(objective: str, options: str, first: float, tmp_path: Path, model_dir: Path) -> None:
    """The objectives named after TRL's loss types run in the generated script: at the first step the policy is its
    reference, every log-ratio 0, so the loss is the objective's own value there (APO-zero 1 - 1/2 + 1/2; SPPO
    2 (1 / (2 beta))^2; DiscoPOP under the forward KL, whose score 1 - exp(-0) is 0 too, half log 2 and half
    exp(0)), and then the model moves; an `sft_weight` on APO-zero adds the chosen completions' NLL, logged as
    sft_nll."""
    recipe = _project(tmp_path / objective, model_dir, objective=objective, options=options, steps=3)
    _run(recipe)
    steps = [m for m in _metrics(recipe) if "loss" in m]  # step 1 warms up from lr 0: step 3 is the first that moved
    assert steps[0]["loss"] == pytest.approx(first, abs=1e-5) and steps[2]["loss"] != pytest.approx(first, abs=1e-4)
    assert steps[0]["reward_margin"] == pytest.approx(0, abs=1e-6) and steps[2]["reward_margin"] != 0
    if objective == "apo_zero":  # the same first step with the supervised term: above it by w x the NLL
        rpo = _project(tmp_path / "rpo", model_dir, objective=objective, options="sft_weight = 0.5", steps=2)
        _run(rpo)
        step = next(m for m in _metrics(rpo) if "loss" in m)  # one micro-batch: the loss is 1 + w x its NLL
        assert step["sft_nll"] > 1 and step["loss"] == pytest.approx(first + 0.5 * step["sft_nll"], abs=1e-5)
        assert "sft_nll" not in steps[0]


def test_wpo_and_ld_dpo_train_through_the_script_with_every_reference(tmp_path: Path, model_dir: Path) -> None:
    """WPO and LD-DPO (`wpo = true`, `ld_alpha = 0.5`) in the generated script, with each way of scoring the reference:
    a frozen copy, log-probabilities precomputed before the first step (four columns, the shared parts too), and under
    LoRA the base model with the adapter disabled. At the first step the policy is its reference in all three (LoRA's
    B matrices start at 0), so their losses are one value: log 2 times the mean WPO weight of the micro-batch's pairs,
    below log 2 since every weight is below 1; then the model moves."""
    options = "wpo = true\nld_alpha = 0.5"
    lora = '\n[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj", "v_proj"]\n'
    firsts = {}
    for name, extra_options, extra in (("copy", "", ""), ("precomputed", '\nreference = "precomputed"', ""), ("lora", "", lora)):
        recipe = _project(tmp_path / name, model_dir, options=options + extra_options, steps=3, extra=extra)
        written, plan = build(recipe, (), tmp_path / name / "build" / "pref", project=tmp_path / name)
        script = (written.dir / "train.py").read_text()
        assert plan["objective_options"] == {"beta": 0.1, "label_smoothing": 0.0, "ld_alpha": 0.5, "wpo": True}
        assert "wpo=True" in script and "shared=True" in script
        _run(recipe)
        steps = [m for m in _metrics(recipe) if "loss" in m]
        firsts[name] = steps[0]["loss"]
        assert steps[2]["loss"] != pytest.approx(steps[0]["loss"], abs=1e-4) and steps[2]["reward_margin"] != 0
        if name == "precomputed":
            (saved,) = (tmp_path / name).rglob("reference-*-shared-train-0.pt")
            import torch

            assert torch.load(saved, weights_only=True).shape[1] == 4
    assert firsts["precomputed"] == pytest.approx(firsts["copy"], abs=1e-5) and firsts["lora"] == pytest.approx(firsts["copy"], abs=1e-5)
    assert 0.05 < firsts["copy"] < math.log(2) - 1e-3


def _with_margins(recipe: Path) -> Path:
    """Each pair of every source gets a `gap` column (negative, zero and positive), read as its margin."""
    root = recipe.parent.parent
    for path in (root / "data").glob("*.jsonl"):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "gap": (i % 5) * 0.5 - 0.5}) + "\n" for i, r in enumerate(rows)))
    text = recipe.read_text().replace('records = "preference"\n', 'records = "preference"\nfields = {margin = "gap"}\n')
    recipe.write_text(text)
    return recipe


@pytest.mark.parametrize("peft", [False, True], ids=["full-margins", "lora"])
def test_a_reward_model_trains_and_its_saved_model_scores_as_evaluated(peft: bool, tmp_path: Path, model_dir: Path) -> None:
    """A reward model from the causal LM: the run trains a one-label sequence classifier (its new score head too),
    logs rewards, margin and accuracy, and saves a model that AutoModelForSequenceClassification loads (under LoRA:
    the adapter with its score head, onto the base model), whose Bradley-Terry loss on the evaluation source's pairs,
    rendered with the chat template, is the held-out loss the run logged at its end. Without LoRA the pairs carry a
    margin column (`fields.margin`), which that loss subtracts from each reward difference."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    extra = '\n[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj", "v_proj"]\n' if peft else ""
    recipe = _with_exam(_project(tmp_path / "rm", model_dir, objective="reward", options="center_rewards_coefficient = 0.01", micro=4, steps=4, extra=extra))
    if not peft:
        _with_margins(recipe)
        assert recipe.read_text().count("fields = {margin") == 2
    _run(recipe)
    metrics = _metrics(recipe)
    steps = [m for m in metrics if "loss" in m]
    assert len(steps) == 4 and all(0 < m["loss"] < 5 for m in steps)
    assert {"rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy"} <= set(steps[-1]) and "logps_chosen" not in steps[-1]
    assert steps[-1]["reward_margin"] != steps[0]["reward_margin"]
    final = [m for m in metrics if "eval_loss_exam" in m][-1]
    run = recipe.parent.parent / "runs" / "pref"
    tok = AutoTokenizer.from_pretrained(run / "model")
    if peft:
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
        base.config.pad_token_id = tok.pad_token_id
        model = PeftModel.from_pretrained(base, run / "model")
        assert not torch.equal(model.base_model.model.score.modules_to_save["default"].weight, base.score.original_module.weight)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(run / "model")
        assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1
        assert model.config.pad_token_id == tok.pad_token_id
    model.eval()
    exam = [json.loads(x) for x in (recipe.parent.parent / "data" / "exam.jsonl").read_text().splitlines()]
    losses = []
    with torch.no_grad():
        for pair in exam:
            scores = []
            for side in ("chosen", "rejected"):
                ids = tok.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=False)
                scores.append(model(input_ids=torch.tensor([ids])).logits[0, 0])
            c, r = scores
            losses.append(-F.logsigmoid(c - r - pair.get("gap", 0.0)) + 0.01 * (c + r) ** 2)
    assert torch.stack(losses).mean().item() == pytest.approx(final["eval_loss_exam"], abs=1e-5)
