"""[launch.parallelism]: the device mesh's arithmetic, its errors, and the mesh accelerate builds.

The mesh's sizes are accelerate's (`ParallelismConfig`): dp_replicate, dp_shard, cp, sp and
tp, tp innermost. The data-parallel ranks (dp_replicate x dp_shard) see different samples,
so the batch arithmetic counts them only. The generated accelerate configs of the mesh
cases (tests/test_launch_configs.py) are read back by accelerate's launcher there; here
the environment it gives the training processes is turned into a `ParallelismConfig` and
its device mesh in as many processes as the mesh has ranks, on the CPU over gloo, as
every training process builds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recipec import tp_plans
from recipec.diagnostics import RecipeError
from recipec.resolve.launch import draw_mesh, mesh_sizes
from recipec.schema import LaunchTable

@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run recipec in tmp_path (the project directory), without colour."""
    from click.testing import CliRunner

    from recipec.cli import main

    monkeypatch.chdir(tmp_path)
    return lambda *args: CliRunner().invoke(main, ["--no-color", *args])


TWO_MACHINES = {"num_machines": 2, "machine_rank": "env", "main_process_ip": "env"}


def _errors(plan_of, *args, **kwargs) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        plan_of(*args, **kwargs)
    return [d.message for d in caught.value.diagnostics if d.severity == "error"]


# -- the arithmetic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launch", "sizes"),
    [
        # tp 8 inside each machine, FSDP across the two
        ({"num_processes": 16, **TWO_MACHINES, "strategy": "fsdp", "parallelism": {"tp_size": 8}}, (1, 2, 1, 1, 8)),
        ({"num_processes": 8, "strategy": "fsdp", "parallelism": {"cp_size": 8}}, (1, 1, 8, 1, 1)),
        ({"num_processes": 16, "strategy": "deepspeed", "parallelism": {"sp_size": 8}}, (1, 2, 1, 8, 1)),
        ({"num_processes": 2, "parallelism": {"tp_size": 2}}, (1, 1, 1, 1, 2)),
        # HSDP: 2 replicas, each sharded over 2 x (cp 2) and split by tp 2
        ({"num_processes": 16, "strategy": "fsdp", "parallelism": {"dp_replicate_size": 2, "cp_size": 2, "tp_size": 2}}, (2, 2, 2, 1, 2)),
        # hybrid_shard replicates across machines
        ({"num_processes": 16, **TWO_MACHINES, "strategy": "fsdp", "fsdp": {"sharding_strategy": "hybrid_shard"}, "parallelism": {"tp_size": 2}}, (2, 4, 1, 1, 2)),
        # no mesh: every process is a data-parallel rank (replica under ddp, shard under fsdp)
        ({"num_processes": 4}, (4, 1, 1, 1, 1)),
        ({"num_processes": 4, "strategy": "fsdp"}, (1, 4, 1, 1, 1)),
    ],
)
def test_the_mesh_sizes_multiply_to_the_world(launch, sizes):
    got = mesh_sizes(LaunchTable(**launch))
    assert tuple(got.values()) == sizes
    assert tuple(got) == ("dp_replicate_size", "dp_shard_size", "cp_size", "sp_size", "tp_size")  # accelerate's order
    product = 1
    for n in sizes:
        product *= n
    assert product == launch["num_processes"]


@pytest.mark.parametrize(
    ("micro", "batch", "launch", "dp", "accum"),
    [
        (4, 16, {"num_processes": 16, **TWO_MACHINES, "strategy": "fsdp", "parallelism": {"tp_size": 8}}, 2, 2),
        (2, 8, {"num_processes": 8, "strategy": "fsdp", "parallelism": {"cp_size": 8}}, 1, 4),
        (4, 8, {"num_processes": 2, "parallelism": {"tp_size": 2}}, 1, 2),
        (1, 24, {"num_processes": 24, "strategy": "fsdp", "parallelism": {"tp_size": 2, "cp_size": 2}}, 6, 4),
    ],
)
def test_the_batch_is_split_over_data_parallel_ranks_only(plan_of, micro, batch, launch, dp, accum):
    plan = plan_of(
        train={"micro_batch_size": micro, "batch_size": batch},
        launch={"mixed_precision": "bf16", **launch},
        model={"config": {"num_attention_heads": 8}},
    )
    assert plan["data_parallel_size"] == dp and plan["grad_accum_steps"] == accum and micro * accum * dp == batch
    note = next(s.note for s in plan.settings if s.name == "grad_accum_steps")
    assert note == f"derived: batch_size {batch} / (micro_batch_size {micro} * data_parallel_size {dp})"
    assert plan["dp_shard_size"] * plan["dp_replicate_size"] == dp


def test_a_batch_over_the_mesh_that_does_not_divide_spells_out_the_arithmetic(plan_of):
    (message,) = _errors(
        plan_of,
        train={"micro_batch_size": 4, "batch_size": 12},
        launch={"num_processes": 16, "strategy": "fsdp", "parallelism": {"tp_size": 4}},
    )
    assert message == (
        "train.batch_size 12 is not a multiple of micro_batch_size 4 * data-parallel ranks 4 "
        "(launch.num_processes 16 / (tp_size 4)) = 16"
    )


def test_without_a_mesh_the_script_and_the_plan_are_unchanged(plan_of):
    plan = plan_of(launch={"num_processes": 2})
    assert plan.get("tp_size") is None and plan.get("data_parallel_size") is None
    assert plan.launch.mesh == () and not plan.launch.tensor_parallel
    # an empty table (every size 1) is data parallelism too: no mesh for accelerate
    empty = plan_of(launch={"num_processes": 2, "parallelism": {"tp_size": 1}})
    assert empty.launch.mesh == () and empty.launch.parallelism_config == () and empty["grad_accum_steps"] == plan["grad_accum_steps"]


def test_the_mesh_drawing_names_the_groups_of_ranks():
    launch = LaunchTable(num_processes=16, strategy="fsdp", parallelism={"dp_replicate_size": 2, "tp_size": 4})
    assert draw_mesh(launch) == [
        "16 processes = dp_replicate 2 x dp_shard 2 x tp 4",
        "  dp_replicate    8 groups of 2: 0,8  1,9  ..  (replicate the sharded model; each replica its own samples)",
        "  dp_shard        8 groups of 2: 0,4  1,5  ..  (shard parameters, gradients and optimizer state; each its own samples)",
        "  tp              4 groups of 4: 0-3  4-7  ..  (split every layer's heads and MLP columns; the same samples)",
    ]


def test_explain_draws_the_mesh_and_the_tokens_per_rank(cli, write_recipe):
    write_recipe(
        train={"micro_batch_size": 2, "batch_size": 8},
        launch={"num_processes": 8, "strategy": "fsdp", "mixed_precision": "bf16", "parallelism": {"cp_size": 4}},
    )
    result = cli("explain", "recipe.toml")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "(micro_batch_size 2 x grad_accum_steps 2 x 2 data-parallel ranks of 8 processes)" in out
    # seq_len 32: 2 x 2 x 32 = 128 tokens per data-parallel rank; each cp rank holds 32 / 4 of every sequence
    assert "  tokens per step  256 in total = 128 per data-parallel rank x 2 (micro_batch_size 2 x grad_accum_steps 2 x seq_len 32); 32 per process (seq_len 32 / 4 along the sequence)\n" in out
    assert "  device mesh      8 processes = dp_shard 2 x cp 4\n" in out
    assert "cp 2 groups of 4: 0-3 4-7 (split every sequence (ring attention); the same samples)" in " ".join(out.split())


def test_the_memory_estimate_divides_what_each_dimension_divides(plan_of):
    base = plan_of(launch={"num_processes": 4, "strategy": "fsdp"}, train={"batch_size": 16}).memory
    mesh = plan_of(
        launch={"num_processes": 8, "strategy": "fsdp", "parallelism": {"tp_size": 2}}, train={"batch_size": 16}
    ).memory
    # the same 4 shards, each split in 2 by tensor parallelism
    assert mesh.optimizer == pytest.approx(base.optimizer / 2, abs=1) and mesh.grads == pytest.approx(base.grads / 2, abs=1)
    assert mesh.activations == pytest.approx(base.activations / 2, abs=1) and mesh.logits == base.logits
    cp = plan_of(launch={"num_processes": 8, "strategy": "fsdp", "parallelism": {"cp_size": 2}}, train={"batch_size": 16}).memory
    assert cp.optimizer == pytest.approx(base.optimizer / 2, abs=1)  # FSDP shards over dp_shard x cp = 8
    assert cp.logits == base.logits // 2 and cp.activations == pytest.approx(base.activations / 2, abs=1)


@pytest.mark.parametrize("chunk", [64, 4096])
def test_a_rank_of_a_split_sequence_holds_at_most_a_chunk_of_its_own_logits(plan_of, chunk):
    """The chunked cross-entropy under cp_size 2: a rank holds min(chunk_size, its b * s / 2 tokens) of logits at
    a time, and the output projection's gradient whole."""
    from recipec.memory import LOGIT_COPIES

    launch = {"num_processes": 8, "strategy": "fsdp", "parallelism": {"cp_size": 2}}
    loss = {"cross_entropy": "chunked", "chunk_size": chunk}
    whole = plan_of(launch={"num_processes": 4, "strategy": "fsdp"}, train={"batch_size": 16}, loss=loss)
    cp = plan_of(launch=launch, train={"batch_size": 16}, loss=loss)
    shape = whole.memory
    b, s = whole["micro_batch_size"], whole["seq_len"]
    vocab = next(int(n.split("vocab ")[1].split()[0]) for n in shape.notes if n.startswith("logits: "))
    head_grad = shape.logits - min(chunk, b * s) * vocab * 4 * LOGIT_COPIES
    assert head_grad > 0
    assert cp.memory.logits == min(chunk, b * s // 2) * vocab * 4 * LOGIT_COPIES + head_grad
    assert "b {} * s {} / (cp_size x sp_size 2))".format(b, s) in next(n for n in cp.memory.notes if n.startswith("logits: "))


def test_zero_partitions_over_the_sequence_parallel_ranks_too(plan_of):
    """DeepSpeed shards ZeRO's state over the data-parallel and sequence-parallel ranks together (its
    seq_data_parallel_group; a run of 2 processes at sp 2 holds half of every matrix on each): 4 processes at
    sp 2 divide the optimizer state, gradients and parameters by 4, as 4 data-parallel ranks do."""
    zero3 = {"strategy": "deepspeed", "deepspeed": {"zero_stage": 3}}
    dp = plan_of(launch={"num_processes": 4, **zero3}, train={"batch_size": 16}).memory
    sp = plan_of(launch={"num_processes": 4, **zero3, "parallelism": {"sp_size": 2}}, train={"batch_size": 16}).memory
    assert sp.optimizer == dp.optimizer and sp.grads == dp.grads and sp.params == dp.params
    assert "ZeRO stage 3 over 4 processes" in next(n for n in sp.notes if n.startswith("params: "))


# -- what cannot be built ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("launch", "expected"),
    [
        ({"num_processes": 12, "strategy": "fsdp", "parallelism": {"tp_size": 8}}, "launch.num_processes 12 is not a multiple of launch.parallelism's tp_size 8"),
        ({"num_processes": 12, "strategy": "fsdp", "parallelism": {"tp_size": 2, "cp_size": 4}}, "launch.parallelism's tp_size 2 x cp_size 4 = 8"),
        ({"num_processes": 4, "strategy": "fsdp", "parallelism": {"cp_size": 2, "sp_size": 2}}, "cp_size 2 and sp_size 2 both split the sequence"),
        ({"num_processes": 4, "strategy": "fsdp", "parallelism": {"sp_size": 2}}, "sequence parallelism (sp_size 2) is DeepSpeed's"),
        ({"num_processes": 16, "strategy": "deepspeed", "parallelism": {"sp_size": 8}}, "num_attention_heads 4 is not divisible by launch.parallelism.sp_size 8"),
        ({"num_processes": 4, "strategy": "deepspeed", "parallelism": {"cp_size": 2}}, "context parallelism (cp_size 2) is torch's, which accelerate runs with FSDP 2 only"),
        ({"num_processes": 4, "strategy": "fsdp", "fsdp": {"version": 1}, "parallelism": {"cp_size": 2}}, 'and launch.strategy is "fsdp" version 1'),
        ({"num_processes": 4, "strategy": "deepspeed", "parallelism": {"tp_size": 2}}, "tensor parallelism (tp_size 2) with DeepSpeed is not supported"),
        ({"num_processes": 4, "strategy": "fsdp", "fsdp": {"version": 1}, "parallelism": {"tp_size": 2}}, "and launch.fsdp.version is 1"),
        ({"num_processes": 4, "parallelism": {"dp_replicate_size": 2}}, "dp_replicate_size 2 replicates a sharded model (HSDP)"),
        ({"num_processes": 4, "parallelism": {"tp_size": 2}}, "accelerate does not compose DDP with tensor parallelism"),
        ({"num_processes": 2, "cpu": True, "parallelism": {"tp_size": 2}}, "on the CPU its Accelerator rejects a ParallelismConfig"),
        (
            {"num_processes": 8, **TWO_MACHINES, "strategy": "fsdp", "fsdp": {"sharding_strategy": "hybrid_shard"}, "parallelism": {"dp_replicate_size": 2}},
            "hybrid_shard replicates across machines already",
        ),
    ],
)
def test_an_impossible_mesh_is_a_located_error(plan_of, launch, expected):
    messages = _errors(plan_of, launch=launch, train={"batch_size": 64})
    assert any(expected in m for m in messages), messages


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"model": {"config": {"num_attention_heads": 4, "num_key_value_heads": 2}}}, "num_key_value_heads 2 is not divisible by launch.parallelism.tp_size 4"),
        ({"model": {"config": {"num_attention_heads": 2}}}, "num_attention_heads 2 is not divisible by launch.parallelism.tp_size 4"),
        ({"model": {"init": "gpt2", "config": {"n_embd": 64, "n_head": 4, "n_positions": 128}}}, 'transformers has none for model type "gpt2"'),
    ],
)
def test_the_model_must_split_over_the_tensor_parallel_ranks(plan_of, changes, expected):
    model = changes["model"]
    dotted = {"model.config": None} if "init" in model else {}
    messages = _errors(plan_of, dotted, launch={"num_processes": 8, "strategy": "fsdp", "parallelism": {"tp_size": 4}}, train={"batch_size": 8}, **changes)
    assert any(expected in m for m in messages), messages


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data": {"seq_len": 36}}, "data.seq_len 36 is not a multiple of 2 x launch.parallelism.cp_size 4 = 8"),
        ({"data": {"packing": False}}, "data.packing false pads each document with an attention mask"),
        ({"model": {"attention": "eager"}}, 'ring attention, and model.attention is "eager"'),
        ({"ema": {"decay": 0.999}}, "[ema] keeps a full copy of the weights"),
    ],
)
def test_context_parallelism_needs_whole_unmasked_sequences(plan_of, changes, expected):
    messages = _errors(plan_of, launch={"num_processes": 4, "strategy": "fsdp", "parallelism": {"cp_size": 4}}, **changes)
    assert any(expected in m for m in messages), messages


SP2 = {"num_processes": 4, "strategy": "deepspeed", "deepspeed": {"zero_stage": 3}, "parallelism": {"sp_size": 2}}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data": {"seq_len": 33}}, "data.seq_len 33 is not a multiple of launch.parallelism.sp_size 2"),
        ({"data": {"packing": False}}, "data.packing false pads each document with an attention mask, which Ulysses' attention drops"),
        ({"model": {"attention": "eager"}}, 'takes sdpa or flash attention, and model.attention is "eager"'),
        ({"model": {"config": {"hidden_size": 96, "num_attention_heads": 3, "num_key_value_heads": 3}}}, "num_attention_heads 3 is not divisible by launch.parallelism.sp_size 2"),
        ({"ema": {"decay": 0.999}}, "[ema] keeps a full copy of the weights"),
    ],
)
def test_sequence_parallelism_needs_whole_unmasked_sequences(plan_of, changes, expected):
    messages = _errors(plan_of, launch=SP2, **changes)
    assert any(expected in m for m in messages), messages


def _examples_recipe(tmp_path: Path, data: str, extra: str = "", records: str = "prompt_completion") -> Path:
    """A pretrained model (its config.json) fine-tuned on prompt/completion examples, sp 2 under ZeRO-3."""
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512}
    (model / "config.json").write_text(json.dumps(config))
    rows = [{"prompt": f"Q{i}?", "completion": f" A{i}", "chosen": f" yes {i}", "rejected": f" no {i}", "label": i % 2 == 0} for i in range(8)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "sp.toml"
    path.write_text(
        f'[recipe]\nname = "sp"\n\n[model]\npath = "./model"\n{extra}\n[data]\nseq_len = 64\n{data}\n\n'
        f'[[data.sources]]\npath = "rows.jsonl"\nrecords = "{records}"\n\n'
        "[train]\nmicro_batch_size = 2\nbatch_size = 8\nmax_steps = 10\nsave_every = 0\n\n"
        '[launch]\nnum_processes = 4\nstrategy = "deepspeed"\ndeepspeed = {zero_stage = 3}\nparallelism = {sp_size = 2}\n'
    )
    return path


@pytest.mark.parametrize(
    ("data", "extra", "records", "expected"),
    [
        ("packing = false", "", "prompt_completion", None),  # padded after each example's tokens: causal attention ignores it
        ("packing = true", 'attention = "flash_attention_2"\ndtype = "bfloat16"\n', "prompt_completion", None),  # varlen by position ids
        ("packing = true", "", "prompt_completion", "Ulysses keeps them apart by their position ids only with flash attention"),
        ("packing = false\nmax_length = 128", "", "prompt_completion", "pads every micro-batch of examples to data.seq_len 64"),
        ("packing = false", '\n[preference]\nobjective = "dpo"\n', "preference", None),  # each side a row padded to seq_len
        ("packing = false\nmax_length = 128", '\n[preference]\nobjective = "dpo"\n', "preference", "pads each side of a pair to data.seq_len 64"),
        ("max_length = 32", '\n[preference]\nobjective = "kto"\n', "unpaired_preference", None),  # a KL pair: up to 2 x 32 tokens
        ("", '\n[preference]\nobjective = "kto"\n', "unpaired_preference", "KTO's KL estimate scores each prompt with another example's completion, up to twice max_length 64"),
    ],
    ids=["unpacked", "packed-flash", "packed-sdpa", "longer-than-seq-len", "preference", "preference-longer-than-seq-len", "kto", "kto-kl-pairs-longer-than-seq-len"],
)
def test_sequence_parallelism_takes_examples_it_can_keep_apart(tmp_path: Path, monkeypatch, data, extra, records, expected):
    from recipec.compiler import plan_recipe

    monkeypatch.chdir(tmp_path)
    path = _examples_recipe(tmp_path, data, extra, records)
    if expected is None:
        plan, _ = plan_recipe(path, ())
        assert plan["examples"] and plan.launch.sequence_parallel
        return
    with pytest.raises(RecipeError) as caught:
        plan_recipe(path, ())
    messages = [d.message for d in caught.value.diagnostics if d.severity == "error"]
    assert any(expected in m for m in messages), messages


def test_sequence_parallelism_copies_kv_heads_that_do_not_split(plan_of):
    """Ulysses gives each rank num_key_value_heads / sp_size KV heads, or copies each KV head to sp_size /
    num_key_value_heads ranks: 2 KV heads over sp 4 is fine, 3 over sp 2 is not."""
    launch = {**SP2, "parallelism": {"sp_size": 4}}
    plan = plan_of(launch=launch, model={"config": {"num_attention_heads": 4, "num_key_value_heads": 2}}, train={"batch_size": 8})
    assert plan["sp_size"] == 4 and plan.launch.sequence_parallel
    messages = _errors(plan_of, launch=SP2, model={"config": {"hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 3}})
    assert any("num_key_value_heads 3 and launch.parallelism.sp_size 2 do not divide one another" in m for m in messages), messages


def test_a_hub_models_heads_are_checked_when_the_script_starts(plan_of):
    plan = plan_of(
        {"model.init": None, "model.config": None, "model.path": "meta-llama/Llama-3.1-8B", "tokenizer": None},
        launch={"num_processes": 8, "strategy": "fsdp", "parallelism": {"tp_size": 8}, "hub_offline": False},
        train={"batch_size": 8},
    )
    assert plan.launch.tensor_parallel
    from recipec.render import render

    script = render(plan)["train.py"]
    assert "is not divisible by launch.parallelism.tp_size" in script
    assert 'model = apply_tensor_parallelism(model, accelerator.torch_device_mesh["tp"], model._expand_parallel_plan(model.tp_plan))' in script


# -- the table of tensor-parallel plans ---------------------------------------------------


def test_the_committed_tp_plans_are_the_installed_transformers(update_golden):
    pytest.importorskip("transformers")
    fresh = tp_plans.dumps(tp_plans.generate())
    if update_golden:
        tp_plans.TABLE.write_text(fresh, encoding="utf-8")
    assert fresh == tp_plans.TABLE.read_text(encoding="utf-8"), (
        f"recipec/tp_plans.json was generated from transformers {tp_plans.table()['transformers']}; "
        "regenerate it from the installed one with `python -m recipec.tp_plans` and read the diff"
    )


def test_the_tp_plans_name_the_common_models():
    for model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "mixtral"):
        assert tp_plans.has_plan(model_type), model_type
    assert not tp_plans.has_plan("gpt2")


# -- tensor parallelism on the CPU: the same steps as one process -------------------------


def _train_steps(rank: int, world: int, model_dir: str, init_file: str, out_dir: str, steps: int, tiles: int = 0) -> None:
    """A few AdamW steps of the tiny model, whole (world 1) or split by tensor parallelism of 2 on the tp
    dimension of a (dp_shard, tp) device mesh over gloo, as the generated script splits it with
    launch.parallelism.tp_size: transformers' `apply_tensor_parallelism` with the model's own plan.
    Every rank trains on the same batches (no FSDP here), so every rank's losses are the whole model's. With
    `tiles`, the split model's MLPs are tiled as the script tiles them (model.tiled_mlp, after the split)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForCausalLM
    from transformers.distributed.tensor_parallel import apply_tensor_parallelism

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("dp_shard", "tp"))
        model = apply_tensor_parallelism(model, mesh["tp"], model._expand_parallel_plan(model.tp_plan))
        if tiles:
            from recipec.runtime import tiled_mlp

            tiled_mlp.apply(model, tiles)
    sharded = type(model.model.layers[0].self_attn.q_proj.weight).__name__
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    ids = torch.randint(0, 64, (steps, 2, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(steps):
        loss = model(input_ids=ids[step], labels=ids[step]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    Path(out_dir, f"{rank}.json").write_text(json.dumps({"losses": losses, "weight": sharded}))
    if world > 1:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("tiles", [0, 3], ids=["whole MLP", "tiled MLP"])
def test_tensor_parallelism_over_two_cpu_processes_matches_one(tmp_path: Path, tiles: int):
    """TP 2 over gloo (torch's DTensor on the CPU), in a mesh of 4 processes (dp_shard 2 x tp 2), trains a tiny
    Llama (4 heads, 2 KV heads) as one process does, within 1e-4 per step. accelerate itself takes no
    ParallelismConfig on the CPU (see the schema's error), so the mesh is torch's own, laid out as
    accelerate lays it out, and the model is split as the generated script splits it. With model.tiled_mlp the
    split MLPs run in 3 tiles (each colwise/rowwise pair's all-reduce once a tile), against the whole model."""
    pytest.importorskip("transformers")
    script = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        import torch.distributed.device_mesh
        import torch.multiprocessing as mp
        import transformers.distributed.tensor_parallel
        from transformers import LlamaConfig, LlamaForCausalLM
        from test_mesh import _train_steps
        if __name__ == "__main__":
            root = sys.argv[1]
            torch.manual_seed(0)
            config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)
            LlamaForCausalLM(config).save_pretrained(root + "/model")
            # forked before this process trains (a fork after autograd has run is unsafe): the processes
            # share the imports made once here instead of making them again each
            mp.start_processes(_train_steps, args=(4, root + "/model", root + "/init", root + "/two", 5, {tiles}), nprocs=4, start_method="fork")
            _train_steps(0, 1, root + "/model", "", root + "/one", 5)
        """
    )
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    one = json.loads((tmp_path / "one" / "0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"{r}.json").read_text()) for r in range(4)]
    assert one["weight"] == "Parameter" and all(t["weight"] == "DTensor" for t in two)  # really split
    for t in two:
        assert t["losses"] == pytest.approx(one["losses"], abs=1e-4)
    assert one["losses"][-1] < one["losses"][0]  # it trains


def test_a_local_models_heads_are_read_from_its_config(cli, write_recipe, tmp_path: Path):
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 6, "max_position_embeddings": 4096}
    (model / "config.json").write_text(json.dumps(config))
    write_recipe(
        {"model.init": None, "model.config": None, "model.path": "./model", "tokenizer": None},
        launch={"num_processes": 8, "strategy": "fsdp", "parallelism": {"tp_size": 4}},
    )
    result = cli("validate", "recipe.toml")
    assert result.exit_code == 2, result.output
    assert "the model's num_key_value_heads 6 is not divisible by launch.parallelism.tp_size 4" in result.output


# -- context parallelism on the CPU: where it stops ----------------------------------------


def _context_parallel_forward(rank: int, world: int, model_dir: str, init_file: str, out_dir: str) -> None:
    """One forward of the tiny model inside torch's context_parallel over a cp mesh on gloo, as the
    generated script runs each micro-batch (labels shifted while the sequence is whole)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    shift = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("cp",))
        with context_parallel(mesh["cp"], buffers=[ids, shift], buffer_seq_dims=[1, 1], no_restore_buffers={ids, shift}):
            loss = model(input_ids=ids, labels=shift, shift_labels=shift).loss
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"loss": loss.item()}))
    except NotImplementedError as exc:
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"error": str(exc)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_context_parallelism_needs_the_gpus_attention_kernels(tmp_path: Path):
    """torch's context parallelism shards the CUDA kernels of scaled_dot_product_attention (flash,
    efficient, cuDNN) into ring attention; the CPU kernel has no sharding strategy, so CP cannot be
    checked numerically on the CPU. This test pins where it stops (torch 2.13): the mesh is built, the
    buffers are cut, the forward reaches the attention. When torch adds the CPU kernel, it fails: then
    compare the loss with one process's here, as the tensor-parallel test does."""
    pytest.importorskip("transformers")
    script = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        import torch.distributed.device_mesh
        import torch.distributed.tensor.experimental
        import torch.multiprocessing as mp
        from transformers import LlamaConfig, LlamaForCausalLM
        from test_mesh import _context_parallel_forward
        if __name__ == "__main__":
            root = sys.argv[1]
            torch.manual_seed(0)
            config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)
            LlamaForCausalLM(config).save_pretrained(root + "/model")
            # forked: the processes share the imports made once here instead of making them again each
            mp.start_processes(_context_parallel_forward, args=(2, root + "/model", root + "/init", root), nprocs=2, start_method="fork")
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in range(2):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got.get("error", "").startswith(
            "Operator aten._scaled_dot_product_flash_attention_for_cpu.default does not have a sharding strategy registered"
        ), got
