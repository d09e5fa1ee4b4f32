"""Resolve `[loss]`: the chunked cross-entropy and a mixture of experts' router loss, and what rules them out."""

from __future__ import annotations

from .. import model_types
from ..schema import FsdpTable, ParallelismTable
from .builder import PlanBuilder


def loss_settings(b: PlanBuilder) -> None:
    """How the cross-entropy is computed and the router's coefficient, where the recipe allows them.

    Whether a pretrained model is a mixture of experts is known here only when its config
    is (a local path); otherwise the script checks it when the model is loaded.
    """
    r = b.recipe
    loss = r.loss
    model_type = r.model.init if r.model.init is not None else (b.model_config or {}).get("model_type")
    if r.preference is None and model_type in model_types.UNSHIFTED_LOSS and (loss is None or loss.cross_entropy == "plain"):
        # the model's own loss scores each token against itself; the chunked cross-entropy shifts the labels
        b.error(
            ("model", "init") if r.model.init is not None else ("model", "path"),
            f'the causal-LM class of model type "{model_type}" computes its own loss without shifting the labels '
            "(each token is scored against itself), so training on it would teach the model to copy its input",
            'set [loss] cross_entropy = "chunked", which computes the next-token loss itself',
        )
    if loss is None:
        return
    if r.preference is not None:
        b.error(
            ("loss",),
            "[loss] applies to causal-LM and supervised fine-tuning runs; a [preference] objective computes its own loss",
            "remove [loss]",
        )
        return
    b.section("loss")
    b.key("cross_entropy", ("loss", "cross_entropy"))
    if loss.cross_entropy == "chunked":
        b.key("chunk_size", ("loss", "chunk_size"))
        fsdp_version = (r.launch.fsdp or FsdpTable()).version
        if r.launch.strategy == "fsdp" and fsdp_version == 1:
            # FSDP 1 gathers a flat parameter only inside the forward of the module that holds it, and the
            # chunks apply the output projection after the model's forward
            b.error(
                ("loss", "cross_entropy"),
                'cross_entropy = "chunked" runs under launch.strategy "fsdp" with launch.fsdp.version 2 (torch\'s '
                "fully_shard, which the script tells to keep the output projection gathered from the forward to the "
                "backward), not version 1",
                'set [launch.fsdp] version = 2, or use cross_entropy = "plain"',
            )
        tp = (r.launch.parallelism or ParallelismTable()).tp_size
        if tp > 1:
            b.error(
                ("loss", "cross_entropy"),
                f'cross_entropy = "chunked" applies the whole output projection to each chunk, and tensor parallelism '
                f"(launch.parallelism.tp_size {tp}) splits it over the ranks",
                'use cross_entropy = "plain" (the model\'s own loss over its gathered logits), or tp_size = 1',
            )
    if loss.label_smoothing:
        b.key("label_smoothing", ("loss", "label_smoothing"))
        _whole_sequences(b, "label_smoothing", "label_smoothing is", "remove label_smoothing")
    if loss.type != "nll":
        b.key("loss_type", ("loss", "type"))
        _whole_sequences(b, "type", 'type = "dft" is', 'use type = "nll"')
    if loss.router_aux_loss_coef is not None:
        b.key("router_aux_loss_coef", ("loss", "router_aux_loss_coef"))
        dense = None
        if r.model.init is not None and "router_aux_loss_coef" not in model_types.config_keys(r.model.init):
            dense = f'model.init "{r.model.init}"'
        elif r.model.init is None and b.model_config is not None and "router_aux_loss_coef" not in b.model_config:
            dense = f"the model ({b.model_config.get('model_type', 'its config.json')})"
        if dense is not None:
            b.error(
                ("loss", "router_aux_loss_coef"),
                f"router_aux_loss_coef applies to a mixture-of-experts model, and {dense} has no router",
                "remove router_aux_loss_coef",
            )


def _whole_sequences(b: PlanBuilder, key: str, what: str, instead: str) -> None:
    """An error at loss.<key> when context or sequence parallelism splits the sequences a loss is computed over whole."""
    mesh = b.recipe.launch.parallelism or ParallelismTable()
    if mesh.cp_size * mesh.sp_size > 1:
        split = "cp_size" if mesh.cp_size > 1 else "sp_size"
        b.error(
            ("loss", key),
            f"{what} computed over whole sequences, and launch.parallelism.{split} {getattr(mesh, split)} splits them over the ranks",
            f"{instead}, or set {split} = 1",
        )
