"""Resolve `[peft]`: the adapter spec the script hands recipec_runtime/adapters.py, and QLoRA's quantization."""

from __future__ import annotations

from typing import Any

from ..schema import Recipe
from ..saved_adapter import recipe_spec
from .builder import PlanBuilder

QUANT_COMPUTE_DTYPE = "bfloat16"
"""The dtype a 4-bit QLoRA base computes in (bitsandbytes dequantizes each weight to it for its matmul)."""


def peft_settings(b: PlanBuilder) -> None:
    """The adapter spec, what is saved, and the base model's quantization (QLoRA)."""
    r = b.recipe
    if r.peft is None:
        return
    b.section("peft")
    adapter = b.adapter
    if adapter is None:
        spec = r.peft.model_dump(exclude_none=True, exclude={"save_merged", "quantize", "adapter"})
        b.add("peft_spec", spec, "peft", b.origin(("peft",)))
    else:
        # what the script checks the saved adapter's config against: the keys the recipe sets, and those
        # read from a local adapter (a hub adapter not in the cache is read when the script starts)
        spec = recipe_spec(r)
        b.add("peft_spec", spec, "peft (the keys checked against peft.adapter's config)", b.origin(("peft",)))
        if adapter.path == r.peft.adapter:
            b.key("peft_adapter", ("peft", "adapter"))
        else:  # a local adapter as found: ./x for x, a recipec run directory's model/
            b.add("peft_adapter", adapter.path, "peft.adapter", b.origin(("peft", "adapter")))
        if adapter.revision is not None:
            b.key("peft_adapter_revision", ("peft", "adapter_revision"))
        if adapter.files:
            b.derived("peft_adapter_sha256", adapter.files, "derived: sha256 of the adapter's config and weights")
        elif adapter.config is None:
            b.warn(
                ("peft", "adapter"),
                f"the hub adapter {adapter.path}{'' if adapter.revision is None else ' (revision ' + adapter.revision + ')'} is not in the local cache: the script checks the recipe's [peft] keys against "
                "its config as it starts, and the keys the recipe leaves unset show recipec's defaults here, not the adapter's",
            )
    b.key("peft_save_merged", ("peft", "save_merged"))
    if r.peft.method == "lora":
        b.key("peft_quantize", ("peft", "quantize"))
        if r.peft.quantize is not None:
            config, note = quantization(r)
            b.derived("quantization", config, note)
    if r.model.init is not None:
        b.warn(("peft", "method"), "a PEFT adapter on a from-scratch model trains the adapter on random weights")
    if getattr(r.peft, "quantize", None) is not None and r.model.init is not None:
        b.error(("peft", "quantize"), "quantization needs pretrained weights; a from-scratch model has none")


def quantization(recipe: Recipe) -> tuple[dict[str, Any], str]:
    """transformers' `BitsAndBytesConfig` keyword arguments for `peft.quantize`, and their note.

    Under a strategy that shards the parameters (FSDP, ZeRO stage 3) the 4-bit weights are
    stored in the compute dtype (`bnb_4bit_quant_storage`), as the tools that run FSDP-QLoRA
    do: sharding flattens a unit's parameters into tensors of one floating dtype, and
    bitsandbytes' default storage is uint8. The packed bytes are the same either way.
    """
    if recipe.peft.quantize == "8bit":
        return {"load_in_8bit": True}, "derived: peft.quantize 8bit (bitsandbytes int8)"
    config = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": QUANT_COMPUTE_DTYPE}
    note = f"derived: peft.quantize 4bit (bitsandbytes nf4, computed in {QUANT_COMPUTE_DTYPE})"
    launch = recipe.launch
    zero_3 = launch.strategy == "deepspeed" and launch.deepspeed is not None and launch.deepspeed.zero_stage == 3
    if launch.strategy == "fsdp" or zero_3:
        config["bnb_4bit_quant_storage"] = QUANT_COMPUTE_DTYPE
        sharded = "launch.strategy fsdp" if launch.strategy == "fsdp" else "ZeRO stage 3"
        note += f", stored as {QUANT_COMPUTE_DTYPE} so that {sharded} shards the 4-bit weights"
    return config, note
