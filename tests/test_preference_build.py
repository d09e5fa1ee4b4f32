"""Preference recipes at build time: the plan, the generated script, the memory estimate, and
`recipec diff` between two of them naming a changed objective, beta or reference."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from recipec.compiler import build, plan_recipe
from recipec.diagnostics import RecipeError
from recipec.diff import diff

PAIRS = [
    {"prompt": f"Q{i}?", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(8)
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512,
    }))
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return tmp_path


def recipe(project: Path, name: str, preference: str, peft: str = "") -> Path:
    path = project / f"{name}.toml"
    path.write_text(f"""
[recipe]
name = "{name}"

[model]
path = "./model"

[preference]
{preference}

[data]
seq_len = 64

[[data.sources]]
path = "pairs.jsonl"
records = "{'unpaired_preference' if 'kto' in preference or 'unpaired' in preference else 'preference'}"

[train]
micro_batch_size = 4
batch_size = 8
max_steps = 10
save_every = 0

[launch]
cpu = true
{peft}
""")
    return path


def test_a_supervised_term_is_an_option_of_the_objective(project: Path) -> None:
    _, plan = build(recipe(project, "rpo", 'objective = "ipo"\nsft_weight = 0.5'), (), project / "build" / "rpo", project=project)
    assert plan["objective_options"] == {"beta": 0.1, "sft_weight": 0.5, "sft_average": "tokens"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('objective = "hinge"\ndivergence = "reverse_kl"', {"beta": 0.1}),  # DPO's own divergence: nothing said
        ('objective = "hinge"\ndivergence = "js_divergence"', {"beta": 0.1, "divergence": "js_divergence"}),
        ('objective = "discopop"\ndivergence = "alpha_divergence"', {"beta": 0.1, "tau": 0.05, "divergence": "alpha_divergence", "divergence_alpha": 0.5}),
        ('objective = "aot"\nlabel_smoothing = 0.1', {"beta": 0.1, "label_smoothing": 0.1}),
    ],
)
def test_a_divergence_is_an_option_of_the_objective_when_not_dpos_own(project: Path, options: str, expected: dict) -> None:
    _, plan = build(recipe(project, "f", options), (), project / "build" / "f", project=project)
    assert plan["objective_options"] == expected


def test_the_plan_and_the_script_name_the_objective_and_reference(project: Path) -> None:
    written, plan = build(recipe(project, "a", 'objective = "dpo"\nbeta = 0.2'), (), project / "build" / "a", project=project)
    assert plan["objective"] == "dpo"
    assert plan["objective_options"] == {"beta": 0.2, "label_smoothing": 0.0}  # no sft_weight: no supervised term
    assert plan["reference_model"] == "copy"
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert "objective = 'dpo'               # preference.objective" in script
    assert "ref_model = copy.deepcopy(model).eval().requires_grad_(False)" in script
    assert "disable_adapter" not in script and "precompute_reference" not in script


def test_peft_disables_the_adapter_and_precomputed_needs_no_copy(project: Path) -> None:
    peft = '[peft]\nmethod = "lora"\n'
    written, plan = build(recipe(project, "b", 'objective = "ipo"', peft), (), project / "build" / "b", project=project)
    script = (written.dir / "train.py").read_text()
    assert plan["reference_model"] == "adapter_disabled"
    assert "unwrapped.disable_adapter()" in script and "deepcopy" not in script
    written, plan = build(recipe(project, "c", 'objective = "dpo"\nreference = "precomputed"'), (), project / "build" / "c", project=project)
    script = (written.dir / "train.py").read_text()
    assert "preference.precompute_reference(" in script and "deepcopy" not in script
    written, plan = build(recipe(project, "d", 'objective = "simpo"'), (), project / "build" / "d", project=project)
    script = (written.dir / "train.py").read_text()
    assert plan["reference"] is None and "ref_logps = None  # reference-free" in script


@pytest.mark.parametrize(
    ("overrides", "made"),
    [
        (("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="fsdp"'), "preference.fsdp_plugin_shard(accelerator),"),
        (("launch.num_processes=2", 'launch.strategy="fsdp"'), "lambda m: sharding.shard(m, fsdp_transformer_layer_cls),"),
    ],
    ids=["plugin", "fully_shard"],
)
def test_fsdp_shards_a_live_copy_as_the_model(project: Path, overrides: tuple[str, ...], made: str) -> None:
    """Under FSDP the live reference is a frozen copy sharded as the model is (accelerate's plugin on GPUs, torch's
    fully_shard on CPU), made from the model as it starts: before a checkpoint is loaded."""
    written, plan = build(recipe(project, "s", 'objective = "dpo"'), overrides, project / "build" / "s", project=project)
    assert plan["reference_model"] == "copy"
    assert next(setting.note for setting in plan.settings if setting.name == "reference_model").endswith("sharded as the model is (FSDP)")
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert "ref_model = preference.fsdp_reference(" in script and made in script
    assert "deepcopy" not in script and "ref_model.to(" not in script
    assert script.index(made) < script.index("accelerator.load_state")


def test_fsdp_shards_the_memory_of_its_live_copy(project: Path) -> None:
    fsdp = ("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="fsdp"')
    live, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"'), fsdp)
    pre, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"\nreference = "precomputed"'), fsdp)
    n_params = next(int(n.split()[1].replace(",", "")) for n in pre.memory.notes if n.startswith("params: "))
    assert live.memory.params - pre.memory.params == n_params * 4 // 2  # the copy, sharded over 2 processes
    assert any("the frozen reference copy" in n and "/ 2, fsdp full_shard" in n for n in live.memory.notes)
    # shard_grad_op keeps the model's gathered layers until the backward; the copy runs none and is still halved
    grad_op = ("launch.fsdp.sharding_strategy=\"shard_grad_op\"",)
    live, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"'), fsdp + grad_op)
    pre, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"\nreference = "precomputed"'), fsdp + grad_op)
    assert live.memory.params - pre.memory.params == n_params * 4 // 2
    offload = ("launch.fsdp.cpu_offload=true",)
    live, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"'), fsdp + offload)
    pre, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"\nreference = "precomputed"'), fsdp + offload)
    assert live.memory.params == pre.memory.params  # offloaded with the model's shards
    assert any("the frozen reference copy (offloaded to the CPU)" in n for n in live.memory.notes)


def test_a_live_copy_under_fsdp_with_tensor_parallelism_is_refused(project: Path) -> None:
    overrides = ("launch.cpu=false", "launch.num_processes=4", 'launch.strategy="fsdp"', "launch.parallelism.tp_size=2")
    with pytest.raises(RecipeError) as caught:
        plan_recipe(recipe(project, "t", 'objective = "dpo"'), overrides)
    [error] = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert "launch.parallelism.tp_size 2 also splits the model's layers" in error.message
    assert 'reference = "precomputed"' in error.help
    for ok in ('objective = "dpo"\nreference = "precomputed"', 'objective = "simpo"'):
        plan_recipe(recipe(project, "t", ok), overrides)


def _deepspeed(stage: int) -> tuple[str, ...]:
    return ("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="deepspeed"', f"launch.deepspeed.zero_stage={stage}")


@pytest.mark.parametrize(
    ("stage", "made"),
    [
        (2, "ref_model = copy.deepcopy(model).eval().requires_grad_(False)"),  # beside ZeRO-2's whole weights
        (3, "ref_model = preference.zero3_reference(accelerator, model)"),  # partitioned as the policy is
    ],
)
def test_deepspeed_keeps_a_live_copy(project: Path, stage: int, made: str) -> None:
    written, plan = build(recipe(project, f"z{stage}", 'objective = "kto"'), _deepspeed(stage), project / "build" / "z", project=project)
    assert plan["reference_model"] == "copy"
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert made in script and ("deepcopy" in script) == (stage == 2)
    # the model as it starts: made before a checkpoint is loaded
    assert script.index(made) < script.index("accelerator.load_state")


def test_zero3_partitions_the_memory_of_its_live_copy(project: Path) -> None:
    live, _ = plan_recipe(recipe(project, "z3", 'objective = "dpo"'), _deepspeed(3))
    pre, _ = plan_recipe(recipe(project, "z3", 'objective = "dpo"\nreference = "precomputed"'), _deepspeed(3))
    n_params = next(int(n.split()[1].replace(",", "")) for n in pre.memory.notes if n.startswith("params: "))
    assert live.memory.params - pre.memory.params == n_params * 4 // 2  # the copy, partitioned over 2 processes
    assert any("the frozen reference copy" in n and "/ 2, ZeRO-3" in n for n in live.memory.notes)


def test_the_memory_estimate_counts_both_sides_and_the_frozen_copy(project: Path) -> None:
    live, _ = plan_recipe(recipe(project, "e", 'objective = "dpo"'), ())
    pre, _ = plan_recipe(recipe(project, "f", 'objective = "dpo"\nreference = "precomputed"'), ())
    kto, _ = plan_recipe(recipe(project, "g", 'objective = "kto"'), ())
    assert live.memory.params == 2 * pre.memory.params  # the copy: a second set of weights
    assert live.memory.activations == 2 * kto.memory.activations  # a pair row holds two sides
    assert any("frozen reference copy" in n for n in live.memory.notes)


def test_apo_zero_unpaired_is_kto_without_its_kl_estimate(project: Path) -> None:
    """APO-zero unpaired trains on KTO's records and rows, with KTO's weights; with no KL estimate from the other
    examples of a micro-batch it takes one example per micro-batch and a precomputed reference, which KTO refuses."""
    options = 'reference = "precomputed"\nundesirable_weight = 2.0'
    written, plan = build(recipe(project, "apo", f'objective = "apo_zero_unpaired"\n{options}'), ("train.micro_batch_size=1",), project / "build" / "apo", project=project)
    assert plan["objective"] == "apo_zero_unpaired" and plan["reference"] == "precomputed"
    assert plan["objective_options"] == {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 2.0}
    script = (written.dir / "train.py").read_text()
    assert "unpaired = objective in preference.UNPAIRED" in script and 'unpaired=unpaired,\n        kl=objective == "kto"' in script
    with pytest.raises(RecipeError) as e:  # KTO: neither
        build(recipe(project, "kto", f'objective = "kto"\n{options}'), ("train.micro_batch_size=1",), project / "build" / "kto", project=project)
    assert "micro_batch_size = 2 or more" in str(e.value) and "cannot be computed before training" in str(e.value)
    apo, _ = plan_recipe(recipe(project, "apo", 'objective = "apo_zero_unpaired"'), ())
    kto, _ = plan_recipe(recipe(project, "kto", 'objective = "kto"'), ())
    assert apo.memory.activations == kto.memory.activations  # one example a row
    path = recipe(project, "paired", 'objective = "apo_zero_unpaired"')
    path.write_text(path.read_text().replace('records = "unpaired_preference"', 'records = "preference"'))
    with pytest.raises(RecipeError, match="'apo_zero_unpaired' trains on unpaired_preference records, and sources\\[0\\] holds preference records"):
        plan_recipe(path, ())


def test_tr_dpo_syncs_a_live_copy_and_checkpoints_it(project: Path) -> None:
    """reference_sync_every: plan settings of their own (not objective options), the copy registered for the
    checkpoints (whole, whatever shards it) and moved toward the policy after each reference_sync_every-th optimizer
    step: the unwrapped model's parameters for a whole copy (ZeRO-2) and ZeRO-3's, gathered in turn; under FSDP the
    prepared model's shards, which the copy holds alike."""
    fsdp = ('launch.strategy="fsdp"', "launch.num_processes=2", "launch.cpu=true")
    unwrapped = "preference.sync_reference(accelerator.unwrap_model(model), ref_model, reference_sync_alpha)"
    for name, overrides, call in (("tr", (), unwrapped), ("tr2", _deepspeed(2), unwrapped), ("tr3", _deepspeed(3), unwrapped),
                                  ("trf", fsdp, "preference.sync_reference(model, ref_model, reference_sync_alpha)")):
        written, plan = build(recipe(project, name, 'objective = "dpo"\nreference_sync_every = 4'), overrides, project / "build" / name, project=project)
        assert plan["reference_sync_every"] == 4 and plan["reference_sync_alpha"] == 0.6
        assert plan["objective_options"] == {"beta": 0.1, "label_smoothing": 0.0}
        script = (written.dir / "train.py").read_text()
        assert "reference_sync_every = 4" in script and "accelerator.register_for_checkpointing(preference.CheckpointedReference(ref_model))" in script
        assert "if step % reference_sync_every == 0:" in script
        assert call in script, name
    _, plain = build(recipe(project, "plain", 'objective = "dpo"'), (), project / "build" / "plain", project=project)
    assert plain.get("reference_sync_every") is None and "sync_reference" not in (project / "build" / "plain" / "train.py").read_text()


@pytest.mark.parametrize(
    ("options", "overrides", "peft", "message"),
    [
        ('reference = "precomputed"\nreference_sync_every = 4', (), "", "a precomputed reference is scored once, before the first step"),
        ("reference_sync_every = 4", (), "[peft]\nmethod = \"lora\"", "under [peft] the live reference is the base model with the adapter disabled"),
        ("reference_sync_alpha = 0.5", (), "", "reference_sync_every is unset (no sync)"),
    ],
    ids=["precomputed", "peft", "alpha-alone"],
)
def test_tr_dpo_without_a_live_copy_of_its_own_is_a_located_error(project: Path, options: str, overrides: tuple, peft: str, message: str) -> None:
    with pytest.raises(RecipeError) as e:
        plan_recipe(recipe(project, "bad", f'objective = "dpo"\n{options}', peft), overrides)
    assert message in str(e.value) and "bad.toml:" in str(e.value)


def test_the_reference_sync_is_trls(tmp_path: Path) -> None:
    """sync_reference against TRL's SyncRefModelCallback on two different tiny Llamas: every parameter bit for bit."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.callbacks import SyncRefModelCallback

    from recipec.runtime.preference import sync_reference

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    policy, reference = LlamaForCausalLM(config), LlamaForCausalLM(config)
    theirs = copy.deepcopy(reference)
    SyncRefModelCallback._sync_target_model(policy, theirs, 0.3)
    sync_reference(policy, reference, 0.3)
    pairs = list(zip(theirs.state_dict().items(), reference.state_dict().items()))
    assert pairs and all(ka == kb and torch.equal(a, b) for (ka, a), (kb, b) in pairs)
    assert not torch.equal(reference.lm_head.weight, policy.lm_head.weight)


def test_diff_names_a_changed_objective_beta_and_reference(project: Path) -> None:
    recipe(project, "a", 'objective = "dpo"\nbeta = 0.1')
    recipe(project, "b", 'objective = "dpo"\nbeta = 0.3\nreference = "precomputed"')
    recipe(project, "c", 'objective = "hinge"\nbeta = 0.1')
    group = click.Group(commands=[diff])
    out = CliRunner().invoke(group, ["diff", "a.toml", "b.toml"]).stdout
    assert "~ objective_options: {'beta': 0.1, 'label_smoothing': 0.0} -> {'beta': 0.3, 'label_smoothing': 0.0}" in out
    assert "~ reference: 'live' -> 'precomputed'" in out
    out = CliRunner().invoke(group, ["diff", "a.toml", "c.toml"]).stdout
    assert "~ objective: 'dpo' -> 'hinge'" in out


@pytest.mark.parametrize(
    ("overrides", "synced"),
    [
        ((), False),  # one process: the main process generates
        (("launch.cpu=false", "launch.num_processes=2"), False),  # DDP: whole weights on the main process
        (_deepspeed(2), False),
        (_deepspeed(3), True),  # partitioned: every process generates, in step
        (("launch.num_processes=2", 'launch.strategy="fsdp"'), True),  # torch's fully_shard on the CPU
        (("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="fsdp"'), True),  # accelerate's FSDP 2
    ],
    ids=["one", "ddp", "zero2", "zero3", "fsdp-cpu", "fsdp"],
)
def test_generations_from_held_out_prompts(project: Path, overrides: tuple[str, ...], synced: bool) -> None:
    path = recipe(project, "g", 'objective = "dpo"\nreference = "precomputed"')
    path.write_text(path.read_text().replace("save_every = 0", "save_every = 0\neval_generations = 4\nmax_new_tokens = 16"))
    written, plan = build(path, overrides, project / "build" / "g", project=project)
    assert (plan["eval_generations"], plan["max_new_tokens"]) == (4, 16)
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert "generation_prompts = preference.held_out_prompts([eval_ds], eval_generations)" in script
    body = script[script.index("def write_generations():") : script.index("def log(record):")]
    assert ("synced=True" in body) == synced
    # unsharded, the other processes return before generating; sharded, after (they generate too)
    assert body.index("if not master:") < body.index("chat.generate(") if not synced else body.index("if not master:") > body.index("chat.generate(")
    assert 'record.update({k: v if isinstance(v, bool) else tokenizer.decode(v) for k, v in completions.items()})' in body
    evaluate = script[script.index("def evaluate():") : script.index("def write_generations():")]
    assert "write_generations()" in evaluate


def test_generations_need_fsdp_version_2(project: Path) -> None:
    path = recipe(project, "g", 'objective = "dpo"\nreference = "precomputed"')
    path.write_text(path.read_text().replace("save_every = 0", "save_every = 0\neval_generations = 4"))
    overrides = ("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="fsdp"', "launch.fsdp.version=1")
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, overrides)
    [error] = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert error.message == "generating from FSDP version 1's flattened shards is not supported"
    assert error.location is not None and error.location.source_line == "eval_generations = 4"


def test_explain_puts_each_memory_note_beside_its_part(project: Path) -> None:
    """A preference estimate has one note more (the pair's length) than the parts: each part keeps its own."""
    from recipec.cli import main

    recipe(project, "e", 'objective = "dpo"')
    out = CliRunner().invoke(main, ["explain", "e.toml"]).stdout
    memory = out[out.index("[peak memory per device"):].splitlines()
    rows = {line.split()[0]: line for line in memory[1:] if line.strip()}
    assert "parameters" in rows["params"] and "frozen reference copy" in rows["params"]
    assert "trainable" in rows["grads"] and "AdamW" in rows["optimizer"]
    assert "layers" in rows["activations"] and "vocab" in rows["logits"]
    assert "note: preference pairs: s = 2 x data.seq_len 64 (chosen and rejected in one row)" in rows["note:"]


def test_a_reward_model_is_a_sequence_classifier_with_no_reference(project: Path) -> None:
    written, plan = build(recipe(project, "r", 'objective = "reward"\ncenter_rewards_coefficient = 0.01'), (), project / "build" / "r", project=project)
    assert plan["objective"] == "reward" and plan["objective_options"] == {"center_rewards_coefficient": 0.01}
    assert plan.get("reference") is None and plan.get("reference_model") is None
    script = (written.dir / "train.py").read_text()
    ast.parse(script)
    assert "from transformers import AutoModelForSequenceClassification, AutoTokenizer" in script
    assert "AutoModelForCausalLM" not in script and "num_labels=1," in script
    assert "model.config.get_text_config().pad_token_id = tokenizer.pad_token_id" in script
    assert "preference.collate_reward(rows, tokenizer.pad_token_id" in script
    assert "policy = preference.reward_scores(model, batch)" in script and "ref_logps = None" in script
    assert "ref_model" not in script and "sequence_logps" not in script
    written, _ = build(recipe(project, "rl", 'objective = "reward"', '[peft]\nmethod = "lora"\ntarget_modules = ["q_proj"]'), (), project / "build" / "rl", project=project)
    assert 'model = adapters.apply(model, peft_spec, total_steps=max_steps, task_type="SEQ_CLS")' in (written.dir / "train.py").read_text()


def test_the_memory_estimate_of_a_reward_model_has_a_score_head_and_no_vocabulary_logits(project: Path) -> None:
    reward, _ = plan_recipe(recipe(project, "r", 'objective = "reward"'), ())
    simpo, _ = plan_recipe(recipe(project, "s", 'objective = "simpo"'), ())
    h, vocab = 64, 1000  # the fixture's config: untied embeddings
    assert simpo.memory.parameters - reward.memory.parameters == vocab * h - h  # lm_head out, the score head in
    assert reward.memory.activations == simpo.memory.activations  # both sides of every pair, as many tokens
    assert reward.memory.logits * vocab == simpo.memory.logits  # one score a token, not the vocabulary's logits
    assert any(n.startswith("reward model: ") for n in reward.memory.notes)
    lora, _ = plan_recipe(recipe(project, "rl", 'objective = "reward"', '[peft]\nmethod = "lora"\nr = 4\ntarget_modules = ["q_proj"]'), ())
    assert lora.memory.trainable_parameters == 2 * 4 * (h + h) + h  # the adapter on 2 layers' q_proj, and the score head


@pytest.mark.parametrize(
    ("extra", "overrides", "key", "words"),
    [
        ("eval_generations = 2", (), "eval_generations = 2", "a reward model scores sequences and generates none"),
        ("", ("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="deepspeed"', "launch.parallelism.sp_size=2"), None, "pools each row's score at its last token"),
        ("", ("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="fsdp"', "launch.parallelism.tp_size=2"), None, "a reward model has a score head instead"),
    ],
    ids=["generations", "sequence-parallel", "tensor-parallel"],
)
def test_what_a_reward_model_cannot_do_is_a_located_error(project: Path, extra: str, overrides: tuple[str, ...], key: str | None, words: str) -> None:
    path = recipe(project, "r", 'objective = "reward"')
    if extra:
        path.write_text(path.read_text().replace("save_every = 0", f"save_every = 0\n{extra}"))
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, overrides)
    errors = [d for d in caught.value.diagnostics if d.severity == "error" and words in d.message]
    assert len(errors) == 1, [d.message for d in caught.value.diagnostics]
    if key is not None:
        assert errors[0].location is not None and errors[0].location.source_line == key


@pytest.mark.parametrize(
    ("options", "line", "words"),
    [
        ('objective = "dpo"\nextra_losses = {dpo = 0.5}', "extra_losses = {dpo = 0.5}", "'dpo' is the objective itself"),
        ('objective = "hinge"\ndivergence = "js_divergence"\nextra_losses = {bco_pair = 0.5}', "extra_losses = {bco_pair = 0.5}", "and 'bco_pair' is not one"),
        ('objective = "ipo"\nextra_losses = {sppo_hard = -1.0}', "extra_losses = {sppo_hard = -1.0}", "is -1.0, below 0"),
        ('objective = "ipo"\nextra_losses = {robust = 0.5}', "extra_losses = {robust = 0.5}", "robust"),
    ],
    ids=["itself", "divergence", "negative", "not-an-extra"],
)
def test_extra_losses_that_cannot_be_added_are_located_errors(project: Path, options: str, line: str, words: str) -> None:
    with pytest.raises(RecipeError) as caught:
        plan_recipe(recipe(project, "x", options), ())
    [error] = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert words in error.message and error.location is not None and error.location.source_line == line


def test_mpo_is_dpo_with_an_extra_loss_and_the_supervised_term(project: Path) -> None:
    options = 'objective = "dpo"\nobjective_weight = 0.8\nextra_losses = {bco_pair = 0.2}\nsft_weight = 1.0'
    plan, _ = plan_recipe(recipe(project, "mpo", options), ())
    assert plan["objective_options"] == {
        "beta": 0.1, "label_smoothing": 0.0, "objective_weight": 0.8, "extra_losses": {"bco_pair": 0.2}, "sft_weight": 1.0, "sft_average": "tokens",
    }  # fmt: skip


def test_ld_dpo_under_sequence_parallelism_is_a_located_error(project: Path) -> None:
    """LD-DPO's split at the shared completion length is counted over whole rows, which sequence parallelism slices;
    WPO's sums add up over the slices, so it is allowed there."""
    sp = ("launch.cpu=false", "launch.num_processes=2", 'launch.strategy="deepspeed"', "launch.parallelism.sp_size=2")
    with pytest.raises(RecipeError) as caught:
        plan_recipe(recipe(project, "ld", 'objective = "dpo"\nld_alpha = 0.5'), sp)
    [error] = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert "LD-DPO splits each side at the pair's shared completion length" in error.message and "sp_size 2" in error.message
    assert error.location is not None and error.location.source_line == "ld_alpha = 0.5"
    plan, _ = plan_recipe(recipe(project, "w", 'objective = "dpo"\nwpo = true'), sp)
    assert plan["objective_options"]["wpo"] is True


def test_neftune_with_a_preference_objective_is_a_located_error(project: Path) -> None:
    path = recipe(project, "n", 'objective = "dpo"')
    path.write_text(path.read_text().replace("save_every = 0", "save_every = 0\nneftune_noise_alpha = 5.0"))
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, ())
    [error] = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert "NEFTune's noise would change the log-probabilities" in error.message
    assert error.location is not None and error.location.source_line == "neftune_noise_alpha = 5.0"
