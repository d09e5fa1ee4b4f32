"""A source config's device mesh as `[launch.parallelism]`.

The importers read their tool's keys for tensor, context and sequence parallelism and for
replicated shard groups, and hand the sizes here. :func:`place` keeps each size the drafted
recipe can run (the checks `recipec validate` makes against the strategy, the data and the
attention), drops the others with the reason and a warning, sizes `launch.num_processes` to
the smallest world that holds the mesh (raising the `--num-processes` given, with a warning),
and sets the global batch to what recipec counts: micro-batch x accumulation x data-parallel
ranks, the ranks of one tensor, context or sequence group sharing their samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .. import tp_plans
from .core import Draft

SPLITS = ("tp_size", "cp_size", "sp_size")
DIMS = ("dp_replicate_size", *SPLITS)


@dataclass
class Dim:
    """One mesh size of the source config and the keys it came from."""

    size: int
    keys: tuple[str, ...]
    approx: str | None = None
    """What differs, when the recipe's dimension is not the source's (ring-flash-attn vs torch's ring attention)."""
    also: tuple[str, ...] = ()
    """Keys that only tune this dimension (ring_attn_func): mapped with it, dropped with it."""
    also_approx: str | None = None
    """What differs for `also`, when the dimension is kept (None: exact)."""


@dataclass
class Mesh:
    """The mesh sizes a source config asks for. `shard` is an explicit data-parallel sharding
    size; recipec derives it from the world, so it is exact only when the two agree."""

    tp_size: Dim | None = None
    cp_size: Dim | None = None
    sp_size: Dim | None = None
    dp_replicate_size: Dim | None = None
    shard: Dim | None = None
    kept: dict[str, int] = field(default_factory=dict)

    def asked(self) -> dict[str, Dim]:
        return {k: v for k in DIMS if (v := getattr(self, k)) is not None}


def _sources_records(d: Draft) -> list[str]:
    return [s["records"].value for s in d.sources if s.get("records") is not None]


def blocker(d: Draft, dim: str, size: int, kept: dict[str, int], given: int = 1) -> str | None:
    """Why the drafted recipe cannot run `dim` = `size` (recipec validate's checks), or None."""
    strategy = d.value("launch.strategy", "ddp")
    fsdp2 = strategy == "fsdp" and d.value("launch.fsdp.version", 2) == 2
    if dim == "tp_size":
        init = d.value("model.init")
        if init and not tp_plans.has_plan(init):
            return f"recipec splits the layers by transformers' tensor-parallel plan, and the model type {init} has none"
        for name, line in d.tables.get("model.config", {}).items():
            if name in ("num_attention_heads", "num_key_value_heads", "n_heads") and isinstance(line.value, int) and line.value % size:
                return f"the model's {name} {line.value} does not divide by {size}"
        if strategy == "deepspeed":
            return "recipec's tensor parallelism composes with FSDP 2 or DDP; accelerate does not run it with DeepSpeed"
        if strategy == "fsdp" and not fsdp2:
            return "recipec's tensor parallelism composes with FSDP 2, and the run shards with FSDP 1"
        if d.tables.get("peft"):
            return "recipec does not train PEFT adapters under tensor parallelism"
        if strategy == "ddp" and given > size:
            return f"the run replicates the model (DDP) over {given} processes, and accelerate does not compose DDP replicas with tensor parallelism"
    if dim == "dp_replicate_size":
        if not fsdp2:
            return f"replicated shard groups (HSDP) are FSDP 2's in recipec, and the run's strategy is {strategy}" + (" (FSDP 1)" if strategy == "fsdp" else "")
        if d.value("launch.fsdp.sharding_strategy") == "hybrid_shard":
            return "the FSDP sharding strategy hybrid_shard replicates across machines already"
    if dim in SPLITS and (d.tables.get("ema") or d.tables.get("merge")):
        return "recipec keeps [ema]/[merge] weight copies whole, which a split model cannot"
    if dim == "cp_size":
        if not fsdp2:
            return f"recipec's context parallelism (torch's ring attention) runs under FSDP 2, and the run's strategy is {strategy}" + (" (FSDP 1)" if strategy == "fsdp" else "")
        records = _sources_records(d)
        if d.tables.get("preference") or any(r != "text" for r in records):
            return "recipec's ring attention attends causally over whole sequences, and the data are examples kept apart by masks (it needs text records)"
        if not d.value("data.packing", True):
            return "recipec's ring attention needs full seq_len blocks (data.packing), and the run pads each document"
        seq_len = d.value("data.seq_len")
        if isinstance(seq_len, int) and seq_len % (2 * size):
            return f"recipec's context parallelism cuts each sequence into 2 x cp_size chunks, and seq_len {seq_len} is not a multiple of {2 * size}"
    if dim == "sp_size":
        if strategy != "deepspeed":
            return f"recipec's sequence parallelism is DeepSpeed's (Ulysses), and the run's strategy is {strategy}"
        records = _sources_records(d)
        packing = d.value("data.packing", True)
        attention = d.value("model.attention", "sdpa")
        if d.tables.get("preference"):
            longest, seq = d.value("data.max_length"), d.value("data.seq_len")
            kto = d.value("preference.objective") == "kto"
            if isinstance(seq, int) and (longest if isinstance(longest, int) else seq) > (seq // 2 if kto else seq):
                what = "KTO's KL pairs (a prompt with another example's completion) to" if kto else "each side of a pair to"
                return f"recipec's sequence parallelism pads {what} seq_len {seq}, and max_length is {longest or seq}"
        elif any(r != "text" for r in records):
            if packing and attention not in ("flash_attention_2", "flash_attention_3"):
                return f"recipec's sequence parallelism keeps packed examples apart with flash attention only, and the run's attention is {attention}"
            longest, seq = d.value("data.max_length"), d.value("data.seq_len")
            if not packing and isinstance(longest, int) and isinstance(seq, int) and longest > seq:
                return f"recipec's sequence parallelism pads unpacked examples to seq_len {seq}, and max_length is {longest}"
        elif not packing:
            return "recipec's sequence parallelism splits full seq_len blocks of packed text records"
        seq_len = d.value("data.seq_len")
        if isinstance(seq_len, int) and seq_len % size:
            return f"recipec's sequence parallelism cuts each sequence into sp_size pieces, and seq_len {seq_len} is not a multiple of {size}"
        for name, line in d.tables.get("model.config", {}).items():
            if name in ("num_attention_heads", "n_heads") and isinstance(line.value, int) and line.value % size:
                return f"Ulysses gives every rank num_attention_heads / sp_size heads, and the model's {name} {line.value} does not divide by {size}"
            if name == "num_key_value_heads" and isinstance(line.value, int) and line.value % size and size % line.value:
                return f"Ulysses splits or copies the KV heads, and the model's num_key_value_heads {line.value} and {size} do not divide one another"
        if attention not in ("sdpa", "flash_attention_2", "flash_attention_3"):
            return f"DeepSpeed's Ulysses runs sdpa or flash attention, and the run's attention is {attention}"
    if dim == "sp_size" and kept.get("cp_size", 1) > 1:
        return "cp_size and sp_size both split the sequence"
    return None


def _sizes(kept: dict[str, int]) -> str:
    return " x ".join(f"{k} {v}" for k, v in kept.items() if v > 1)


def place(d: Draft, given: int, mesh: Mesh, rebatch: Callable[[int, str], None]) -> None:
    """Write `[launch.parallelism]`, `launch.num_processes` and the global batch for `mesh`.

    `given` is the `--num-processes` of the import; `rebatch(dp, note)` rewrites the batch for
    `dp` data-parallel ranks (`note` says how they follow from the processes)."""
    kept: dict[str, int] = {}
    for dim, src in mesh.asked().items():
        if src.size <= 1:
            d.exact(*src.keys, *src.also)
            continue
        why = blocker(d, dim, src.size, kept, given)
        if why is not None:
            for k in src.keys:
                d.drop(k, "missing-feature", f"{why}; the recipe runs without the split, on the processes of the rest of the mesh.")
            for k in src.also:
                d.drop(k, "no-equivalent", f"a setting of a {dim.removesuffix('_size')} split that is not imported.")
            d.warn(f"`{src.keys[0]}: {src.size}` is not imported: {why}.", *src.keys)
            continue
        kept[dim] = src.size
        if dim == "cp_size":
            _sdpa(d)
        d.set(f"launch.parallelism.{dim}", src.size, *src.keys, approx=src.approx)
        if src.also:
            if src.also_approx:
                d.approx(src.also_approx, *src.also)
            else:
                d.exact(*src.also)
    mesh.kept = kept
    fixed = 1
    for v in kept.values():
        fixed *= v
    split = kept.get("tp_size", 1) * kept.get("cp_size", 1) * kept.get("sp_size", 1)
    shard = mesh.shard
    need = fixed * (shard.size if shard is not None and shard.size > 0 else 1)
    if not kept or given % need == 0:
        world = given  # no split to size the world by, or the given one holds the mesh
    else:
        world = need * -(-given // need)  # the smallest multiple of the mesh with at least the processes given
    if shard is not None:
        derived = world // fixed
        if shard.size <= 0 or shard.size == derived:
            d.exact(*shard.keys)
        elif not kept.get("dp_replicate_size") and not d.value("launch.strategy") in ("fsdp", "deepspeed"):
            d.drop(shard.keys[0], "ignored-by-tool", "the run does not shard the model; its data-parallel ranks are replicas.")
        else:
            d.approx(f"recipec derives the sharding from the processes: dp_shard_size {derived} over {world} processes", *shard.keys)
            d.warn(f"`{shard.keys[0]}: {shard.size}` differs from the {derived} processes left over by the mesh of {world}: recipec derives it", *shard.keys)
    if not kept:
        return
    if world != given:
        d.warn(
            f"launch.num_processes is {world}, not the {given} given to recipec import: the mesh ({_sizes(kept)}"
            + (f", {shard.keys[0]} {shard.size}" if shard is not None and shard.size > 1 else "")
            + f") needs a multiple of {need} processes",
            *[k for s in mesh.asked().values() for k in s.keys],
        )
    rebatch(world // split, f"{world // split} data-parallel rank{'s' if world // split > 1 else ''} ({world} processes / {split})" if split > 1 else f"{world} processes")
    note = f"{world} processes ({_sizes(kept)})" + ("" if world == given else f"; raised from --num-processes {given}")
    d.set("launch.num_processes", world, note=note)


def _sdpa(d: Draft) -> None:
    """Context parallelism in recipec is torch's ring attention, which replaces SDPA: the attention becomes sdpa."""
    line = d.tables.get("model", {}).get("attention")
    if line is None or line.value == "sdpa":
        if line is None:
            d.set("model.attention", "sdpa", note="context parallelism: torch's ring attention replaces sdpa")
        return
    was = line.value
    d.set(
        "model.attention",
        "sdpa",
        *line.keys,
        approx=f"{was} becomes sdpa: recipec's context parallelism runs torch's ring attention in place of sdpa (the same attention, exchanged between the ranks)",
    )
