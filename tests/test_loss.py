"""`[loss]`: what the recipe allows, what the plan and the script get, and the memory estimate."""

from __future__ import annotations

import ast

import pytest

from recipec.diagnostics import RecipeError
from recipec.render import render


def _errors(plan_of, *args, **kwargs) -> str:
    with pytest.raises(RecipeError) as info:
        plan_of(*args, **kwargs)
    return str(info.value)


def test_no_loss_table_leaves_the_models_own_loss(plan_of):
    plan = plan_of()
    assert plan.get("cross_entropy") is None
    text = render(plan)["train.py"]
    assert "lm_loss" not in text and "model(**batch, use_cache=False).loss" in text


def test_chunked_settings_and_script(plan_of):
    plan = plan_of(text='[loss]\ncross_entropy = "chunked"\nchunk_size = 64\n')
    assert (plan["cross_entropy"], plan["chunk_size"]) == ("chunked", 64)
    assert plan.get("router_aux_loss_coef") is None
    text = render(plan)["train.py"]
    ast.parse(text)
    assert "lm_loss.chunked_cross_entropy(hidden, batch[\"labels\"], output_head, chunk_size, logit_softcap, same_chunks_across=chunks_across)" in text
    assert "chunks_across = None" in text  # one process: no gathers to keep in step
    assert "model(**batch, use_cache=False).loss" not in text  # training and evaluation both go through it
    assert "aux_loss" not in text


def test_chunk_size_without_chunked_is_an_error(plan_of):
    assert "`chunk_size` applies only with cross_entropy" in _errors(plan_of, text="[loss]\nchunk_size = 64\n")


@pytest.mark.parametrize(
    "settings, gathered",
    [
        ({"launch.strategy": "fsdp", "launch.num_processes": 2}, True),  # torch's fully_shard on the CPU
        ({"launch.strategy": "fsdp", "launch.num_processes": 2, "launch.cpu": False}, True),  # accelerate's FSDP 2 plugin
        ({"launch.strategy": "deepspeed", "launch.num_processes": 2, "launch.cpu": False, "launch.deepspeed.zero_stage": 3}, False),
        ({"launch.num_processes": 2}, False),
    ],
)
def test_chunked_under_each_strategy(plan_of, settings, gathered):
    """FSDP 2 keeps its root unit (the output projection's) gathered for the chunks; DDP and ZeRO need nothing."""
    text = render(plan_of(settings, text='[loss]\ncross_entropy = "chunked"\n'))["train.py"]
    ast.parse(text)
    assert ("lm_loss.keep_head_gathered(model, output_head)" in text) == gathered
    if gathered:  # after the model is sharded, before the first forward
        assert text.index("keep_head_gathered(model") > max(text.find("sharding.shard(model"), text.find("accelerator.prepare(model"))
        assert text.index("keep_head_gathered(model") < text.index("def causal_lm_loss")


def test_chunked_is_an_error_under_fsdp_1_and_tensor_parallelism(plan_of):
    text = '[loss]\ncross_entropy = "chunked"\n'
    v1 = {"launch.strategy": "fsdp", "launch.num_processes": 2, "launch.cpu": False, "launch.fsdp.version": 1}
    assert "not version 1" in _errors(plan_of, v1, text=text)
    assert plan_of({**v1, "launch.fsdp.version": 2}, text=text)["cross_entropy"] == "chunked"
    tp = {"launch.strategy": "fsdp", "launch.num_processes": 2, "launch.cpu": False, "launch.parallelism.tp_size": 2}
    message = _errors(plan_of, tp, text=text)
    assert "tensor parallelism (launch.parallelism.tp_size 2) splits it" in message
    assert "tensor parallelism" not in _errors(plan_of, tp, text='[loss]\ncross_entropy = "plain"\nchunk_size = 4\n')


def test_loss_with_preference_is_an_error(plan_of):
    from recipec.schema import Recipe

    assert "loss" in Recipe.model_fields  # the table exists; resolve rules it out under [preference]
    from recipec.resolve.loss import loss_settings

    class Builder:  # the one branch that needs [preference]: checked without a preference data set
        def __init__(self, recipe):
            self.recipe, self.errors = recipe, []

        def error(self, path, message, help=None):
            self.errors.append((path, message))

    plan = plan_of(text='[loss]\ncross_entropy = "chunked"\n')
    recipe = plan.recipe.model_copy(update={"preference": object()})
    b = Builder(recipe)
    loss_settings(b)
    assert b.errors and b.errors[0][0] == ("loss",) and "[preference]" in b.errors[0][1]


def test_router_aux_loss_coef_on_a_known_dense_model_is_an_error(plan_of):
    message = _errors(plan_of, text="[loss]\nrouter_aux_loss_coef = 0.01\n")
    assert 'router_aux_loss_coef applies to a mixture-of-experts model, and model.init "llama" has no router' in message


def test_router_aux_loss_coef_on_a_local_dense_model_is_an_error():
    from recipec.resolve import resolve
    from recipec.source import parse_recipe
    from recipec.validate import validate

    from conftest import _recipe_text

    text = _recipe_text(model={"path": "./m", "init": None, "config": None}, text="[loss]\nrouter_aux_loss_coef = 0.01\n")
    data, source = parse_recipe(text, "recipes/tiny.toml", ())
    recipe = validate(data, source)
    with pytest.raises(RecipeError, match="the model \\(llama\\) has no router"):
        resolve(recipe, source, recipe_file="recipes/tiny.toml", model_config={"model_type": "llama", "vocab_size": 512})
    moe = {"model_type": "mixtral", "vocab_size": 512, "router_aux_loss_coef": 0.001}
    plan = resolve(recipe, source, recipe_file="recipes/tiny.toml", model_config=moe)
    assert plan["router_aux_loss_coef"] == 0.01 and plan["cross_entropy"] == "plain"
    script = render(plan)["train.py"]
    ast.parse(script)
    assert "lm_loss.set_router_aux_loss_coef(model, router_aux_loss_coef)" in script
    assert 'record["aux_loss"]' in script and "output_router_logits=training" in script


def test_chunked_memory_estimate_counts_one_chunk_of_logits(plan_of):
    # minimal recipe: micro-batch 4 x seq_len 32 = 128 tokens, vocab 512
    plain = plan_of().memory
    chunked = plan_of(text='[loss]\ncross_entropy = "chunked"\nchunk_size = 16\n').memory
    assert plain.logits == 128 * 512 * 4 * 3
    head_grad = 512 * 64 * 4  # the output projection's gradient of one chunk
    assert chunked.logits == 16 * 512 * 4 * 3 + head_grad
    assert chunked.activations == plain.activations and chunked.params == plain.params
    assert "min(loss.chunk_size 16, b 4 * s 32) * vocab 512" in chunked.notes[-1]
    large = plan_of(text='[loss]\ncross_entropy = "chunked"\n').memory  # a chunk larger than the batch
    assert large.logits == plain.logits + head_grad
    lora = plan_of(text='[loss]\ncross_entropy = "chunked"\nchunk_size = 16\n[peft]\nmethod = "lora"\n').memory
    assert lora.logits == 16 * 512 * 4 * 3  # a frozen head has no gradient


def test_a_model_type_whose_own_loss_is_unshifted_needs_the_chunked_loss(plan_of):
    """BartForCausalLM (and the types of UNSHIFTED_LOSS) score each token against itself: a recipe on its own loss
    is an error at model.init; the chunked cross-entropy, which shifts the labels, is the way to train it."""
    bart = {"model.init": "bart", "model.config": {"d_model": 64, "decoder_layers": 2, "decoder_attention_heads": 4, "decoder_ffn_dim": 128}}
    with pytest.raises(RecipeError) as info:
        plan_of(bart)
    [error] = [e for e in info.value.diagnostics if "without shifting" in e.message]
    assert error.location.source_line.startswith("init = ") and 'model type "bart"' in error.message
    assert 'cross_entropy = "chunked"' in error.help
    assert "without shifting" in _errors(plan_of, bart, text='[loss]\ncross_entropy = "plain"\n')
    plan = plan_of(bart, text='[loss]\ncross_entropy = "chunked"\n')
    assert plan["cross_entropy"] == "chunked"


@pytest.mark.parametrize("dim", ["cp_size", "sp_size"])
def test_chunked_under_context_and_sequence_parallelism_reads_the_labels_shifted_before_the_cut(plan_of, dim):
    launch = {"num_processes": 4, "strategy": "fsdp", "parallelism": {"cp_size": 4}}
    if dim == "sp_size":
        launch = {"num_processes": 4, "strategy": "deepspeed", "deepspeed": {"zero_stage": 3}, "parallelism": {"sp_size": 2}, "cpu": False}
    plan = plan_of(launch=launch, loss={"cross_entropy": "chunked", "chunk_size": 64})
    text = render(plan)["train.py"]
    ast.parse(text)
    if dim == "cp_size":  # training micro-batches carry shift_labels, cut with the sequence; evaluation's are whole
        assert 'if "shift_labels" in batch:' in text and 'batch["shift_labels"], output_head, chunk_size, logit_softcap, shifted=True, same_chunks_across=chunks_across)' in text
        assert "keep_head_gathered" in text
    else:  # the group's sum of each rank's chunked sum; ZeRO-3 gathers the projection on each call
        assert "sequence_parallel.causal_lm_loss(model, batch, summed_loss=chunked_sum)" in text
        assert "chunks_across = torch.distributed.group.WORLD if accelerator.num_processes > 1 else None" in text
        assert "shifted=True, reduction=\"sum\"" in text


@pytest.mark.parametrize("cross_entropy", ["plain", "chunked"])
def test_label_smoothing_in_training_and_the_plain_loss_in_evaluation(plan_of, cross_entropy):
    plan = plan_of(loss={"cross_entropy": cross_entropy, "label_smoothing": 0.1})
    assert plan["label_smoothing"] == 0.1
    text = render(plan)["train.py"]
    ast.parse(text)
    if cross_entropy == "plain":  # the model's logits, without its own loss
        assert 'outputs = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)' in text
        assert 'loss = lm_loss.cross_entropy(outputs.logits, batch["labels"], label_smoothing if training else 0.0)' in text
    else:
        assert "same_chunks_across=chunks_across, label_smoothing=label_smoothing if training else 0.0)" in text
    assert "causal_lm_loss(batch, training=False)" in text  # evaluation: eps 0
    assert "label_smoothing" not in render(plan_of(loss={"cross_entropy": cross_entropy}))["train.py"]


SEQUENCE_SPLITS = [
    {"num_processes": 4, "strategy": "fsdp", "parallelism": {"cp_size": 4}},
    {"num_processes": 4, "strategy": "deepspeed", "deepspeed": {"zero_stage": 3}, "parallelism": {"sp_size": 2}, "cpu": False},
]
"""Launches whose context or sequence parallelism splits the sequences."""


@pytest.mark.parametrize("cross_entropy", ["plain", "chunked"])
def test_dft_in_training_and_the_plain_loss_in_evaluation(plan_of, cross_entropy):
    plan = plan_of(loss={"cross_entropy": cross_entropy, "type": "dft"})
    assert plan["loss_type"] == "dft"
    text = render(plan)["train.py"]
    ast.parse(text)
    if cross_entropy == "plain":  # the model's logits, without its own loss
        assert 'outputs = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)' in text
        assert 'loss = lm_loss.cross_entropy(outputs.logits, batch["labels"], dft=training)' in text
    else:
        assert "same_chunks_across=chunks_across, dft=training)" in text
    assert "causal_lm_loss(batch, training=False)" in text  # evaluation: the plain cross-entropy
    assert "dft" not in render(plan_of(loss={"cross_entropy": cross_entropy}))["train.py"]
    assert plan_of(loss={"cross_entropy": cross_entropy, "type": "nll"}).get("loss_type") is None  # the default says nothing


@pytest.mark.parametrize("launch", SEQUENCE_SPLITS, ids=["cp", "sp"])
def test_dft_under_a_sequence_split_is_an_error(plan_of, launch):
    split = "cp_size 4" if "cp_size" in launch["parallelism"] else "sp_size 2"
    message = _errors(plan_of, launch=launch, loss={"cross_entropy": "chunked", "type": "dft"})
    assert f'type = "dft" is computed over whole sequences, and launch.parallelism.{split} splits them' in message


@pytest.mark.parametrize("launch", SEQUENCE_SPLITS, ids=["cp", "sp"])
def test_label_smoothing_under_a_sequence_split_is_an_error(plan_of, launch):
    split = "cp_size 4" if "cp_size" in launch["parallelism"] else "sp_size 2"
    message = _errors(plan_of, launch=launch, loss={"cross_entropy": "chunked", "label_smoothing": 0.1})
    assert f"label_smoothing is computed over whole sequences, and launch.parallelism.{split} splits them" in message
