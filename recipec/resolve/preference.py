"""Resolve `[preference]`: the objective the script optimises, its reference model, and the
checks that tie it to the data (preference records), the model and the launch."""

from __future__ import annotations

from ..runtime.formats import PREFERENCE
from ..runtime.preference import OBJECTIVES, UNPAIRED
from .builder import PlanBuilder

PAIRED = [o for o in OBJECTIVES if o not in UNPAIRED]
"""The objectives that train on paired records (KTO and APO-zero unpaired train on unpaired ones)."""


def preference_settings(b: PlanBuilder) -> None:
    """The objective, its options and the reference; errors where the recipe cannot train on preferences."""
    r = b.recipe
    p = r.preference
    sources = r.data.sources
    wanted = None if p is None else "unpaired_preference" if p.objective in UNPAIRED else "preference"
    for i, src in enumerate(sources):
        if src.records == wanted:
            continue
        where = ("data", "sources", i, "records")
        if p is None and src.records in PREFERENCE:
            if src.records == "unpaired_preference":
                hint = 'add [preference] objective = "kto" (or ' + ", ".join(o for o in UNPAIRED if o != "kto") + ")"
            else:
                hint = 'add [preference] objective = "dpo" (or ' + ", ".join(o for o in PAIRED if o not in ("dpo", "reward")) + "; reward for a reward model)"
            b.error(where, f"sources[{i}] holds {src.records} records, which train with a [preference] objective", hint)
        elif p is not None:
            b.error(
                where,
                f'preference.objective {p.objective!r} trains on {wanted} records, and sources[{i}] holds {src.records} records',
                f'set records = "{wanted}" on every source'
                + (f'; paired data trains with {", ".join(PAIRED[:-1])} or {PAIRED[-1]}' if src.records == "preference" else ""),
            )
    if p is None:
        return
    b.section("preference")
    b.key("objective", ("preference", "objective"))
    options = p.model_dump(exclude={"objective", "reference", "reference_sync_every", "reference_sync_alpha"})
    if not options.get("sft_weight"):  # no supervised term: its settings say nothing
        options = {k: v for k, v in options.items() if k not in ("sft_weight", "sft_average")}
    if "wpo" in options and not options["wpo"]:
        del options["wpo"]
    if "extra_losses" in options and not options["extra_losses"]:  # the objective's loss alone
        del options["extra_losses"]
        if options.get("objective_weight") == 1.0:
            del options["objective_weight"]
    if "ld_alpha" in options and options["ld_alpha"] is None:
        del options["ld_alpha"]
    if options.get("divergence") == "reverse_kl":  # DPO's own divergence: nothing to say
        options = {k: v for k, v in options.items() if k not in ("divergence", "divergence_alpha")}
    elif "divergence" in options and options["divergence"] != "alpha_divergence":
        options.pop("divergence_alpha")
    b.add("objective_options", options, "preference (the objective's own options)", b.origin(("preference",)))
    reference = getattr(p, "reference", None)
    if reference is None:
        b.derived("reference", None, f"derived: {p.objective} is reference-free")
    else:
        b.key("reference", ("preference", "reference"))
        how = "the base model with the adapter disabled" if r.peft is not None else "a frozen copy of the starting model"
        if r.peft is None and r.launch.strategy == "fsdp":
            how += ", sharded as the model is (FSDP)"
        if reference == "live":
            b.derived("reference_model", "adapter_disabled" if r.peft is not None else "copy", f"derived: preference.reference live under {'[peft]' if r.peft else 'full fine-tuning'}: {how}")
    if getattr(p, "reference_sync_every", None) is not None:
        _reference_sync(b, reference)
    if r.model.init is not None and r.continual is None:
        b.error(("preference", "objective"), "preference training tunes a trained model, and model.init builds an untrained one", "set model.path (or [continual] from a supervised run)")
    with_margin = [i for i, src in enumerate(sources) if src.records == "preference" and "margin" in (src.fields or {})]
    if with_margin and p.objective != "reward":
        i = with_margin[0]
        b.error(
            ("data", "sources", i, "fields", "margin"),
            f"sources[{i}] names a margin field, which only a reward model's loss reads, and preference.objective is {p.objective!r}",
            'remove `margin` from fields, or set objective = "reward"',
        )
    if p.objective == "reward":
        _reward_model(b)
        if with_margin:
            named = ", ".join(f"sources[{i}].fields.margin = {sources[i].fields['margin']!r}" for i in with_margin)
            others = " (0 for the pairs of the other sources)" if len(with_margin) < len(sources) else ""
            b.derived("reward_margin", True, f"derived: {named}: the loss is -log sigmoid(r_chosen - r_rejected - margin){others}")
    mesh = r.launch.parallelism
    if getattr(p, "ld_alpha", None) is not None and mesh is not None and mesh.sp_size > 1:
        b.error(
            ("preference", "ld_alpha"),
            f"LD-DPO splits each side at the pair's shared completion length, counted over the whole row, and sequence "
            f"parallelism (sp_size {mesh.sp_size}) scores each rank's slice of the rows apart",
            "remove ld_alpha, or set sp_size = 1",
        )
    if p.objective == "kto":
        if r.train.micro_batch_size < 2:
            b.error(("train", "micro_batch_size"), "KTO estimates its KL term from the other examples of a micro-batch, so it needs at least 2", "set micro_batch_size = 2 or more")
        if reference == "precomputed":
            b.error(("preference", "reference"), "KTO's KL term pairs each prompt with another example's completion in the same (shuffled) micro-batch, so its reference log-probabilities cannot be computed before training", 'use reference = "live"')
    if r.continual is not None:
        if r.continual.eval_parent:
            b.error(("continual", "eval_parent"), "the parent's held-out data is not preference pairs, so this run cannot score it", "set eval_parent = false")
        if r.continual.replay:
            b.error(("continual", "replay"), "replay mixes the parent's training data into this run's, and it is not preference pairs", "set replay = 0")
    if reference == "live" and r.peft is None and r.launch.strategy == "fsdp" and mesh is not None and mesh.tp_size > 1:
        b.error(
            ("preference", "reference"),
            f"a live reference without [peft] under FSDP is a frozen copy sharded over the data-parallel ranks as the model is, "
            f"and launch.parallelism.tp_size {mesh.tp_size} also splits the model's layers, which the copy does not follow",
            'use reference = "precomputed" (the same log-probabilities, computed before the first step), or tp_size = 1',
        )


def _reference_sync(b: PlanBuilder, reference: str) -> None:
    """TR-DPO: a live reference copy of its own, moved toward the policy every reference_sync_every steps."""
    r = b.recipe
    where = ("preference", "reference_sync_every")
    if reference == "precomputed":
        b.error(where, "TR-DPO moves the reference toward the policy as it trains, and a precomputed reference is scored once, before the first step", 'set reference = "live", or remove reference_sync_every')
    elif r.peft is not None:
        b.error(where, "under [peft] the live reference is the base model with the adapter disabled, the policy's own weights, which TR-DPO cannot move apart (as TRL refuses sync_ref_model with PEFT)", "remove reference_sync_every, or [peft]")
    b.key("reference_sync_every", where)
    b.key("reference_sync_alpha", ("preference", "reference_sync_alpha"))


def _reward_model(b: PlanBuilder) -> None:
    """A reward model is a one-label sequence classifier: it scores sequences and generates nothing, and its
    score head is outside the layouts that split a causal LM's sequence or layers."""
    r = b.recipe
    if r.train.eval_generations:
        b.error(("train", "eval_generations"), "a reward model scores sequences and generates none", "set eval_generations = 0")
    mesh = r.launch.parallelism
    if mesh is not None and mesh.sp_size > 1:
        b.error(
            ("launch", "parallelism", "sp_size"),
            f"sequence parallelism (sp_size {mesh.sp_size}) splits each row's tokens over the ranks of a group, and a reward "
            "model pools each row's score at its last token, which one rank alone holds",
            "set sp_size = 1 (shard the model with ZeRO-3 or FSDP instead)",
        )
    if mesh is not None and mesh.tp_size > 1:
        b.error(
            ("launch", "parallelism", "tp_size"),
            f"transformers' tensor-parallel plans split a causal LM's layers and its lm_head, and a reward model has a "
            f"score head instead, which no plan covers (tp_size {mesh.tp_size})",
            "set tp_size = 1 (shard the model with ZeRO-3 or FSDP instead)",
        )
