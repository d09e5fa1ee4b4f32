"""Preference training: the objectives, the log-probabilities they read, and the pair rows.

A preference pair is stored as one row: the prompt and chosen completion, then the prompt
and rejected completion, each a segment whose ``position_ids`` restart at 0 (as packed
examples are), so one forward pass scores both sides and attention never crosses from one
to the other. A row's ``mask`` holds bits per token:

* :data:`SUPERVISED` (1): the token is part of a completion (its log-probability counts);
* :data:`REJECTED` (2): the token belongs to the rejected side;
* :data:`UNDESIRABLE` (4): the unpaired objectives (KTO, APO-zero unpaired) only, the example's label is false.

The unpaired objectives' examples are single segments (prompt and completion); KTO's KL estimate pairs each prompt
of a micro-batch with the previous example's completion (the last with the first), as TRL does.

A held-out set is filled up to whole micro-batches of every process (``data.FilledUp``): its
filler rows (marked ``data.FILLER``) are scored, since every process runs as many forward
passes, but count for nothing: a micro-batch that holds some has ``counted`` (per row), the
objective reads the other rows alone, and KTO's KL pairs cycle over them alone, so a filled-up
micro-batch gives what its counted rows give by themselves.

Under sequence parallelism (``collate(..., pad_to=seq_len)``) a micro-batch is laid out in
sides instead: each side of a pair is a row of its own (the chosen sides, then the rejected
ones), each KTO example and KL pair too, every row padded to ``seq_len`` after its tokens.
Ulysses' attention drops the mask and attends causally over a whole row, so a row may hold
one segment only; and DeepSpeed's adapter cuts every ``[rows, seq_len]`` tensor along the
sequence and shifts ``labels`` alone while it is whole, so the rest that scores a token by
its successor comes pre-shifted (``shift_completion``, ``kl_shift_labels``). Per-row values
(``desirable``, a precomputed ``reference``) are plain lists, which the adapter hands whole
to every rank. Each rank sums the log-probabilities of its slice of every row; the sums and
token counts are summed across the sp group (differentiably) before any objective reads them.

Every objective is a function of the sequence log-probabilities (summed over the
completion's tokens) of the policy and, where it has one, of the reference model:

* ``dpo``: ``-log sigmoid(beta * delta)`` with ``delta`` the chosen log-ratio less the
  rejected; ``label_smoothing`` eps gives conservative DPO,
  ``-(1 - eps) log sigmoid(beta delta) - eps log sigmoid(-beta delta)``;
* ``ipo``: ``(delta' - 1 / (2 beta))^2`` with the log-ratios averaged over each side's tokens;
* ``hinge``: ``relu(1 - beta * delta)``;
* ``robust`` (rDPO): ``(-(1 - eps) log sigmoid(beta delta) + eps log sigmoid(-beta delta)) / (1 - 2 eps)``;
* ``bco_pair``, ``nca_pair``, ``sppo_hard``, ``apo_zero``, ``apo_down``: TRL's loss types of
  those names, functions of ``beta`` times each side's log-ratio;
* ``dpo_norm`` (TRL's ``sigmoid_norm``): DPO over the log-ratios averaged per completion token;
* ``exo_pair`` (EXO): ``q (log q - log(1 - eps)) + (1 - q) (log(1 - q) - log eps)``, ``q = sigmoid(beta delta)``;
* ``aot`` / ``aot_unpaired`` (AOT): conservative DPO's loss on the micro-batch's sorted policy
  log-odds less its sorted reference log-odds (paired), or its sorted chosen log-ratios less its
  sorted rejected ones (unpaired);
* ``discopop``: ``(1 - m) (-log sigmoid(z)) + m exp(-z)``, ``z = beta delta``, ``m = sigmoid(z / tau)``;
* with ``divergence`` (f-DPO; dpo, dpo_norm, ipo, hinge, robust, exo_pair, discopop), each side's
  log-ratio u enters ``delta`` as f'(exp u) of that f-divergence (:func:`_divergence_score`);
* with ``sft_weight`` w (every objective above, and ``simpo`` below: CPO-SimPO): ``+ w * NLL`` of the chosen completions (RPO), their
  log-probabilities averaged over the micro-batch's chosen completion tokens (``sft_average``
  ``tokens``, TRL's ``sft`` loss) or per completion, then over the pairs (``sequences``,
  LLaMA-Factory's ``pref_ftx``);
* ``simpo``: reference-free, ``-log sigmoid(beta (avg chosen - avg rejected) - gamma)`` over
  the per-token average log-probabilities;
* ``orpo``: reference-free, the chosen side's cross-entropy less ``beta`` times
  ``log sigmoid`` of the log odds ratio of the averaged log-probabilities;
* ``kto``: ``1 - sigmoid(beta (ratio - KL))`` for desirable and ``1 - sigmoid(beta (KL -
  ratio))`` for undesirable completions, weighted, with KL the clamped batch mean of the
  mismatched pairs' log-ratios;
* ``apo_zero_unpaired`` (APO-zero on unpaired examples, TRL's KTO loss type of that name):
  ``1 - sigmoid(beta ratio)`` for desirable and ``sigmoid(beta ratio)`` for undesirable
  completions, weighted as KTO's; no KL estimate, so no mismatched pairs are scored.

Rewards are ``beta`` times the log-ratio (the objectives with a reference) or the average
log-probability (SimPO, ORPO), as TRL reports them.

``reward`` trains a reward model instead: a sequence-classification model with one label
scores each side of a pair whole (prompt and completion), and the loss is
``-log sigmoid(r_chosen - r_rejected)`` (Bradley-Terry; ``-log sigmoid(r_chosen - r_rejected - margin)``
when the pairs carry a margin), plus ``center_rewards_coefficient``
times the mean of ``(r_chosen + r_rejected)^2``, as TRL's RewardTrainer takes them. Its
micro-batch is laid out by :func:`collate_reward`: each side a row of its own, padded after
its tokens, since the model pools its score at a row's last token that is not padding.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

from .data import FILLER
from .packing import padded_width

SUPERVISED = 1
REJECTED = 2
UNDESIRABLE = 4
IGNORE = -100  # a label the log-probabilities leave out

OBJECTIVES = (
    "dpo", "ipo", "hinge", "robust", "bco_pair", "nca_pair", "sppo_hard", "apo_zero", "apo_down", "dpo_norm", "exo_pair", "aot",
    "aot_unpaired", "discopop", "simpo", "orpo", "kto", "apo_zero_unpaired", "reward",
)  # fmt: skip
UNPAIRED = ("kto", "apo_zero_unpaired")
"""The objectives that train on unpaired examples (records = "unpaired_preference"), each labelled desirable or not."""
REFERENCE_FREE = ("simpo", "orpo", "reward")


def auto_model(objective: str | None) -> str:
    """The name of transformers' Auto class that builds the model ``objective`` trains (None: no [preference]): a
    sequence classifier for ``reward`` (built with ``num_labels = 1``), a causal LM for every other."""
    return "AutoModelForSequenceClassification" if objective == "reward" else "AutoModelForCausalLM"


def pair_row(chosen: tuple[Sequence[int], Sequence[int]], rejected: tuple[Sequence[int], Sequence[int]]) -> dict[str, list[int]]:
    """One stored row of a pair: ``(ids, supervised mask)`` of each side, chosen first."""
    (c_ids, c_mask), (r_ids, r_mask) = chosen, rejected
    mask = [SUPERVISED * bool(m) for m in c_mask] + [REJECTED | (SUPERVISED * bool(m)) for m in r_mask]
    mask[0] &= ~SUPERVISED  # a segment's first token has no prediction
    mask[len(c_ids)] &= ~SUPERVISED
    return {"input_ids": list(c_ids) + list(r_ids), "mask": mask, "position_ids": segment_positions(mask)}


def segment_positions(mask: Sequence[int]) -> list[int]:
    """``position_ids`` of a stored row from its mask bits: restarting where the rejected side starts."""
    start = next((i for i, m in enumerate(mask) if int(m) & REJECTED), len(mask))
    return list(range(start)) + list(range(len(mask) - start))


def unpaired_row(ids: Sequence[int], mask: Sequence[int], desirable: bool) -> dict[str, list[int]]:
    """One stored row of an unpaired example (KTO, APO-zero unpaired): its ids and supervised mask, and its label."""
    label = 0 if desirable else UNDESIRABLE
    bits = [label | (SUPERVISED * bool(m)) for m in mask]
    bits[0] &= ~SUPERVISED
    return {"input_ids": list(ids), "mask": bits, "position_ids": segment_positions(bits)}


def held_out_prompts(sets: Sequence[Any], n: int) -> list[tuple[list[int], dict[str, Any]]]:
    """The first ``n`` distinct prompts of held-out rows, each with the completions its row holds.

    Args:
        sets: held-out row sets in order (a :class:`WithReference` is read through to its rows).
        n: how many prompts; a prompt met again (another pair of the same prompt) is skipped.

    Returns:
        ``(prompt ids, completions)`` per prompt: a pair's ``chosen`` and ``rejected`` ids, or a
        KTO example's ``completion`` ids and ``desirable``.
    """
    out: list[tuple[list[int], dict[str, Any]]] = []
    seen: set[tuple[int, ...]] = set()
    for rows in sets:
        for row in getattr(rows, "rows", rows):
            if len(out) >= n:
                return out
            ids, bits = list(map(int, row["input_ids"])), list(map(int, row["mask"]))
            cut = next((i for i, b in enumerate(bits) if b & REJECTED), len(bits))
            first = [next((i for i in range(a, b) if bits[i] & SUPERVISED), b) for a, b in ((0, cut), (cut, len(bits)))]
            prompt = ids[: first[0]]
            if not prompt or tuple(prompt) in seen:
                continue
            seen.add(tuple(prompt))
            if cut < len(bits):
                completions = {"chosen": ids[first[0] : cut], "rejected": ids[first[1] :]}
            else:
                completions = {"completion": ids[first[0] :], "desirable": not bits[0] & UNDESIRABLE}
            out.append((prompt, completions))
    return out


def collate(
    rows: Sequence[dict[str, Any]],
    pad_id: int,
    *,
    unpaired: bool = False,
    kl: bool = True,
    pad_to: int | None = None,
    pad_to_multiple_of: int | None = None,
    seq_len: int | None = None,
) -> dict[str, Any]:
    """Pad rows to the longest; the model's inputs plus what the objectives read.

    Returns ``input_ids`` and ``position_ids`` (the model's inputs, padding a segment of its
    own), and per token ``supervised``, ``rejected`` and ``real`` (not padding); for unpaired
    examples (``unpaired``) also ``desirable`` (per row) and, unless ``kl`` is False (only KTO
    estimates a KL term), ``kl_input_ids``/``kl_position_ids``/``kl_supervised``/
    ``kl_rejected``/``kl_real``: each prompt followed by the previous row's completion.
    ``reference`` (float per row and side) is passed through when rows carry precomputed
    reference log-probabilities. When some rows are fillers (``data.FILLER``),
    ``counted`` (bool per row) is False for them; KTO's KL pairs then cycle over the counted rows
    alone (and over the fillers apart).

    ``pad_to_multiple_of`` (with ``seq_len``): pad to the longest rounded up, as
    ``packing.padded_width`` says (the KL pairs to theirs).

    ``pad_to``: the sides layout of sequence parallelism instead (see :func:`collate_sides`).
    """
    import torch

    if not rows:
        raise ValueError("cannot collate an empty batch")
    if pad_to is not None:
        return collate_sides(rows, pad_id, pad_to, unpaired=unpaired, kl=kl)
    ids = [torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows]
    bits = [torch.as_tensor(r["mask"], dtype=torch.long) for r in rows]
    positions = [torch.as_tensor(r["position_ids"], dtype=torch.long) for r in rows]
    batch = _pad(ids, bits, positions, pad_id, padded_width(max(len(t) for t in ids), pad_to_multiple_of, seq_len))
    if unpaired:
        batch["desirable"] = torch.tensor([not bool(int(b[0]) & UNDESIRABLE) for b in bits])
    if unpaired and kl:
        # the KL estimate's mismatched pairs: prompt i with completion i - 1
        prompts, completions = zip(*(_split(i, b) for i, b in zip(ids, bits)))
        shifted = [completions[j] for j in _previous(rows)]
        kl_ids, kl_bits = [], []
        for (p_ids, p_bits), (c_ids, c_bits) in zip(prompts, shifted):
            kl_ids.append(torch.cat([p_ids, c_ids]))
            kl_bits.append(torch.cat([p_bits, c_bits]))
        kl_width = padded_width(max(len(t) for t in kl_ids), pad_to_multiple_of, seq_len)
        kl = _pad(kl_ids, kl_bits, [torch.arange(len(t)) for t in kl_ids], pad_id, kl_width)
        batch.update({"kl_" + k: v for k, v in kl.items()})
    if "reference" in rows[0]:
        batch["reference"] = torch.stack([torch.as_tensor(r["reference"], dtype=torch.float32) for r in rows])
    if any(r.get(FILLER) for r in rows):
        batch["counted"] = torch.tensor([not r.get(FILLER) for r in rows])
    return batch


def collate_reward(
    rows: Sequence[dict[str, Any]], pad_id: int, *, pad_to_multiple_of: int | None = None, seq_len: int | None = None
) -> dict[str, Any]:
    """A micro-batch of pairs for a reward model: each side of a pair a row of its own.

    Returns ``input_ids`` ``[2B, W]`` (the chosen sides, then the rejected ones, in the rows'
    order), each padded after its tokens with ``pad_id``, and ``attention_mask``; ``counted``
    (bool per pair) when some rows are fillers; ``margin`` (float32 per pair) when the rows carry one. ``W`` is the longest side, rounded as
    ``packing.padded_width`` says. A sequence-classification model pools its score at a row's
    last token that is not ``pad_id``, so the padding must come after the tokens.
    """
    import torch

    if not rows:
        raise ValueError("cannot collate an empty batch")
    chosen, rejected = [], []
    for r in rows:
        ids = torch.as_tensor(r["input_ids"], dtype=torch.long)
        bits = torch.as_tensor(r["mask"], dtype=torch.long)
        cut = int(((bits & REJECTED) != 0).long().argmax()) if bool(((bits & REJECTED) != 0).any()) else len(ids)
        chosen.append(ids[:cut])
        rejected.append(ids[cut:])
    sides = chosen + rejected
    width = padded_width(max(len(t) for t in sides), pad_to_multiple_of, seq_len)
    input_ids = torch.full((len(sides), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sides), width), dtype=torch.long)
    for i, t in enumerate(sides):
        input_ids[i, : len(t)] = t
        attention_mask[i, : len(t)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "margin" in rows[0]:
        batch["margin"] = torch.tensor([float(r["margin"]) for r in rows], dtype=torch.float32)
    if any(r.get(FILLER) for r in rows):
        batch["counted"] = torch.tensor([not r.get(FILLER) for r in rows])
    return batch


def reward_scores(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """A reward model's score of each side of each pair of a :func:`collate_reward` micro-batch: ``chosen`` and
    ``rejected``, ``[B]`` each, in float32 (the model's one logit, pooled at the last token that is not padding)."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, 0].float()
    n = len(rewards) // 2
    return {"chosen": rewards[:n], "rejected": rewards[n:]}


def collate_sides(rows: Sequence[dict[str, Any]], pad_id: int, pad_to: int, *, unpaired: bool = False, kl: bool = True) -> dict[str, Any]:
    """The sides layout of a micro-batch, for sequence parallelism: one segment per row, every row ``pad_to`` wide.

    Returns ``[rows, pad_to]`` tensors: ``input_ids``, ``position_ids`` (0 to pad_to - 1),
    ``labels`` (each token predicted within its row, from the second on; -100 elsewhere) and
    ``shift_completion`` (1 where the next token is a completion's); the rows are a pair's
    chosen sides, then their rejected sides in the same order. Unpaired examples: each example a row,
    ``desirable`` a list, and unless ``kl`` is False (KTO's KL pairs)
    ``kl_input_ids``/``kl_position_ids``/``kl_shift_labels`` (the next token where it is a
    completion's) of each prompt followed by the previous example's completion. ``reference``: a list of ``[chosen, rejected]`` per pair, when rows carry it; ``counted``
    a list per pair (KTO: example), when some rows are fillers.

    Raises:
        ValueError: a row is longer than ``pad_to``.
    """
    import torch

    main: list[tuple[list[int], list[int]]] = []
    pairs: list[tuple[list[int], list[int]]] = []
    for r in rows:
        ids, bits = [int(t) for t in r["input_ids"]], [int(b) for b in r["mask"]]
        cut = next((i for i, b in enumerate(bits) if b & REJECTED), len(bits))
        main.append((ids[:cut], bits[:cut]))
        if not unpaired:
            main.append((ids[cut:], bits[cut:]))
    if unpaired and kl:
        parts = [_split(torch.as_tensor(ids), torch.as_tensor(bits)) for ids, bits in main]
        shifted = [parts[j][1] for j in _previous(rows)]
        pairs = [(p_ids.tolist() + c_ids.tolist(), p_bits.tolist() + c_bits.tolist()) for (p_ids, p_bits), (c_ids, c_bits) in zip((p for p, _ in parts), shifted)]
    elif not unpaired:
        main = main[0::2] + main[1::2]  # the chosen sides, then the rejected ones
    for what, sides in (("side", main), ("KL pair (a prompt with another example's completion)", pairs)):
        longest = max((len(ids) for ids, _ in sides), default=0)
        if longest > pad_to:
            raise ValueError(f"a {what} of {longest} tokens is longer than the {pad_to} that sequence parallelism pads every row to")
    n = len(main)
    out: dict[str, Any] = {
        "input_ids": torch.full((n, pad_to), pad_id, dtype=torch.long),
        "position_ids": torch.arange(pad_to, dtype=torch.long).repeat(n, 1),
        "labels": torch.full((n, pad_to), IGNORE, dtype=torch.long),
        "shift_completion": torch.zeros((n, pad_to), dtype=torch.long),
    }
    for i, (ids, bits) in enumerate(main):
        k = len(ids)
        out["input_ids"][i, :k] = torch.as_tensor(ids)
        out["labels"][i, 1:k] = torch.as_tensor(ids[1:], dtype=torch.long)
        out["shift_completion"][i, : k - 1] = torch.as_tensor([b & SUPERVISED for b in bits[1:]], dtype=torch.long)
    if unpaired and kl:
        out["kl_input_ids"] = torch.full((n, pad_to), pad_id, dtype=torch.long)
        out["kl_position_ids"] = out["position_ids"].clone()
        out["kl_shift_labels"] = torch.full((n, pad_to), IGNORE, dtype=torch.long)
        for i, (ids, bits) in enumerate(pairs):
            out["kl_input_ids"][i, : len(ids)] = torch.as_tensor(ids)
            for t in range(1, len(ids)):
                if bits[t] & SUPERVISED:
                    out["kl_shift_labels"][i, t - 1] = ids[t]
    if unpaired:
        out["desirable"] = [not int(r["mask"][0]) & UNDESIRABLE for r in rows]
    if "reference" in rows[0]:
        out["reference"] = [[float(v) for v in r["reference"]] for r in rows]
    if any(r.get(FILLER) for r in rows):
        out["counted"] = [not r.get(FILLER) for r in rows]
    return out


def _previous(rows: Sequence[dict[str, Any]]) -> list[int]:
    """For KTO's KL pairs: the row whose completion each row's prompt takes, the previous one (the first takes the
    last's), among the rows that count; filler rows take one another's, so no counted row's pair holds a filler."""
    previous = list(range(len(rows)))
    for fillers in (False, True):
        group = [i for i, r in enumerate(rows) if bool(r.get(FILLER)) == fillers]
        for j, i in enumerate(group):
            previous[i] = group[j - 1]
    return previous


def _pad(ids: list, bits: list, positions: list, pad_id: int, width: int) -> dict[str, Any]:
    import torch

    n = len(ids)
    out = {
        "input_ids": torch.full((n, width), pad_id, dtype=torch.long),
        "position_ids": torch.arange(width, dtype=torch.long).repeat(n, 1),
        "supervised": torch.zeros((n, width), dtype=torch.bool),
        "rejected": torch.zeros((n, width), dtype=torch.bool),
        "real": torch.zeros((n, width), dtype=torch.bool),
    }
    for i, (t, b, p) in enumerate(zip(ids, bits, positions)):
        k = len(t)
        out["input_ids"][i, :k] = t
        out["supervised"][i, :k] = (b & SUPERVISED) != 0
        out["rejected"][i, :k] = (b & REJECTED) != 0
        out["real"][i, :k] = True
        out["position_ids"][i, :k] = p
        out["position_ids"][i, k:] = torch.arange(width - k)  # padding: a segment of its own
    return out


def _split(ids: Any, bits: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """A KTO row's prompt (before the first supervised token) and completion (from it)."""
    supervised = ((bits & SUPERVISED) != 0).nonzero()
    start = int(supervised[0]) if len(supervised) else len(ids)
    return (ids[:start], bits[:start]), (ids[start:], bits[start:])


def token_logps(model: Any, input_ids: Any, position_ids: Any, *, aligned: bool = False) -> Any:
    """The log-probability of each next token, ``[B, T - 1]`` (entry t scores token t + 1).

    The logits are turned into log-probabilities one row at a time, so the ``[B, T, V]``
    float32 log-softmax is never held whole.

    ``aligned``: also WPO's aligned log-probabilities, without gradient (see :func:`_aligned`);
    returns the pair ``(log-probabilities, aligned)``.
    """
    import torch

    logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[:, :-1]
    targets = input_ids[:, 1:]
    rows, extra = [], []
    for i in range(logits.shape[0]):
        row = logits[i].float()
        lse = torch.logsumexp(row, dim=-1)
        rows.append(row.gather(-1, targets[i].unsqueeze(-1)).squeeze(-1) - lse)
        if aligned:
            extra.append(_aligned(rows[-1], row, lse))
    return (torch.stack(rows), torch.stack(extra)) if aligned else torch.stack(rows)


def _aligned(logps: Any, logits: Any, lse: Any) -> Any:
    """WPO's aligned log-probability of each token (Zhou et al. 2024, eq. 2, as TRL computes it): the token's
    log-probability less log sum_v p_v^2, the log of the expected probability of a token drawn from the same
    distribution, without gradient."""
    import torch

    with torch.no_grad():
        return logps.detach() - (torch.logsumexp(2 * logits, dim=-1) - 2 * lse)


def sequence_logps(model: Any, batch: dict[str, Any], *, group: Any = None, wpo: bool = False, shared: bool = False) -> dict[str, Any]:
    """Summed log-probabilities and token counts of each side of each row (the policy's or the reference's).

    Returns ``chosen``/``rejected`` (sums over each side's completion tokens, ``[B]``),
    ``chosen_tokens``/``rejected_tokens`` and ``chosen_all``/``chosen_all_tokens`` (every
    predicted token of the chosen side, prompt included: ORPO's cross-entropy); unpaired examples
    are rows all ``chosen`` (labels in ``batch["desirable"]``), and for KTO (a batch with its KL
    pairs) also ``kl``, the mismatched pairs' sums, computed without gradient.

    ``wpo``: also ``chosen_wpo``/``rejected_wpo``, the sums of WPO's aligned log-probabilities
    (:func:`_aligned`) over each side's completion tokens, without gradient.
    ``shared``: also ``chosen_shared``/``rejected_shared``, the sums over each side's first
    min(chosen tokens, rejected tokens) completion tokens (LD-DPO's shared part; the pair rows only).

    A batch in the sides layout (:func:`collate_sides`) is scored side by side: whole rows, or
    with ``group`` (the sequence-parallel process group) this rank's slice of every row from
    DeepSpeed's adapter, whose sums and counts are then summed across the group.
    """
    import torch

    if "shift_completion" in batch:
        if shared:
            raise ValueError("LD-DPO's shared sums are computed on the pair rows, not the sides layout of sequence parallelism")
        return _side_logps(model, batch, group, wpo)
    if wpo:
        logps, aligned = token_logps(model, batch["input_ids"], batch["position_ids"], aligned=True)
    else:
        logps, aligned = token_logps(model, batch["input_ids"], batch["position_ids"]), None
    out = _sums(logps, batch, "", aligned=aligned, shared=shared)
    if "kl_input_ids" in batch:
        with torch.no_grad():
            kl = token_logps(model, batch["kl_input_ids"], batch["kl_position_ids"])
        out["kl"] = _sums(kl, batch, "kl_")["chosen"]
    return out


def _side_logps(model: Any, batch: dict[str, Any], group: Any, wpo: bool = False) -> dict[str, Any]:
    """:func:`sequence_logps` of a batch in the sides layout: a pair's two sides are rows ``i`` and ``B + i``.

    The chosen and the rejected sides are two forward passes of B rows each: Ulysses' attention
    takes micro-batches of micro_batch_size rows only.
    """
    import torch

    labels = batch["shift_labels"] if "shift_labels" in batch else _shift(batch["labels"])  # the adapter shifts them
    rows = len(labels)
    halves = [slice(0, rows)] if "desirable" in batch else [slice(0, rows // 2), slice(rows // 2, rows)]
    scored = [
        side_sums(model, batch["input_ids"][h], batch["position_ids"][h], labels[h], batch["shift_completion"][h], group, wpo=wpo)
        for h in halves
    ]
    sums, (n_completion, n_every) = (torch.cat([s[i] for s in scored], dim=1) for i in range(2))
    completion, every = sums[0], sums[1]
    if "desirable" in batch:  # unpaired: every row an example
        none = torch.zeros_like(n_completion)
        out = {
            "chosen": completion, "rejected": torch.zeros_like(completion), "chosen_tokens": n_completion, "rejected_tokens": none,
            "chosen_all": every, "chosen_all_tokens": n_every,
        }
        if "kl_input_ids" in batch:  # KTO's mismatched pairs
            with torch.no_grad():
                kl_labels = batch["kl_shift_labels"]
                (out["kl"], _), _ = side_sums(model, batch["kl_input_ids"], batch["kl_position_ids"], kl_labels, kl_labels != IGNORE, group)
        return out
    n = completion.shape[0] // 2
    out = {
        "chosen": completion[:n], "rejected": completion[n:], "chosen_tokens": n_completion[:n], "rejected_tokens": n_completion[n:],
        "chosen_all": every[:n], "chosen_all_tokens": n_every[:n],
    }
    if wpo:
        out.update(chosen_wpo=sums[2][:n], rejected_wpo=sums[2][n:])
    return out


def side_sums(
    model: Any, input_ids: Any, position_ids: Any, shift_labels: Any, shift_completion: Any, group: Any = None, *, wpo: bool = False
) -> tuple[Any, Any]:
    """Per row, the log-probabilities of the completion's tokens and of every predicted token, summed, and their counts.

    ``shift_labels`` holds at t the token that entry t predicts (-100: not counted), and
    ``shift_completion`` whether it is a completion's: entry t of a slice scores the first
    token of the next rank's slice. With ``group``, each rank holds a slice of every row: the
    sums are summed across the group differentiably (the backward sums the upstream gradients
    over the group too, as sequence_parallel.causal_lm_loss does), the counts plainly.

    Returns:
        ``(sums [2, rows], counts [2, rows])``: completion first, every predicted token second; with
        ``wpo`` a third row of sums, the completion's aligned log-probabilities (:func:`_aligned`).
    """
    import torch

    device = getattr(model, "device", None) or input_ids.device
    input_ids, position_ids = input_ids.to(device), position_ids.to(device)
    shift_labels, shift_completion = shift_labels.to(device), shift_completion.to(device)
    logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    targets = shift_labels.clamp(min=0)
    rows, extra = [], []
    for i in range(logits.shape[0]):  # one row at a time: the [rows, T, V] float32 log-softmax is never held whole
        row = logits[i].float()
        lse = torch.logsumexp(row, dim=-1)
        rows.append(row.gather(-1, targets[i].unsqueeze(-1)).squeeze(-1) - lse)
        if wpo:
            extra.append(_aligned(rows[-1], row, lse))
    logps = torch.stack(rows)
    predicted = shift_labels != IGNORE
    completion = predicted & (shift_completion != 0)
    zero = logps.new_zeros(())
    parts = [logps.where(completion, zero).sum(-1), logps.where(predicted, zero).sum(-1)]
    if wpo:
        parts.append(torch.stack(extra).where(completion, zero).sum(-1))
    sums = torch.stack(parts)
    counts = torch.stack([completion.sum(-1), predicted.sum(-1)])
    if group is not None:
        import torch.distributed as dist

        from .sequence_parallel import summed_over

        sums = summed_over(sums, group)
        dist.all_reduce(counts, group=group)
    return sums, counts


def _shift(labels: Any) -> Any:
    """What each entry of whole rows predicts: the labels shifted left, as DeepSpeed's adapter shifts them."""
    import torch

    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)


def row_count(batch: dict[str, Any]) -> int:
    """The rows (pairs, or unpaired examples) of a collated micro-batch that count (fillers do not); in the sides layout and
    the reward layout (:func:`collate_reward`) a pair is two of its rows."""
    if "counted" in batch:
        return int(sum(bool(c) for c in batch["counted"]))
    n = len(batch["input_ids"])
    sides = "attention_mask" in batch or ("shift_completion" in batch and "desirable" not in batch)
    return n // 2 if sides else n


def _sums(logps: Any, batch: dict[str, Any], prefix: str, *, aligned: Any = None, shared: bool = False) -> dict[str, Any]:
    supervised = batch[prefix + "supervised"][:, 1:]
    rejected = batch[prefix + "rejected"][:, 1:]
    # a token is predicted within its segment unless it starts one (position 0)
    predicted = batch[prefix + "real"][:, 1:] & (batch[prefix + "position_ids"][:, 1:] > 0)
    chosen = supervised & ~rejected & predicted
    rejected = supervised & rejected & predicted
    chosen_all = ~batch[prefix + "rejected"][:, 1:] & predicted
    zero = logps.new_zeros(())
    out = {
        "chosen": logps.where(chosen, zero).sum(-1),
        "rejected": logps.where(rejected, zero).sum(-1),
        "chosen_tokens": chosen.sum(-1),
        "rejected_tokens": rejected.sum(-1),
        "chosen_all": logps.where(chosen_all, zero).sum(-1),
        "chosen_all_tokens": chosen_all.sum(-1),
    }
    if aligned is not None:
        out.update(chosen_wpo=aligned.where(chosen, zero).sum(-1), rejected_wpo=aligned.where(rejected, zero).sum(-1))
    if shared:  # each side's first min(n_chosen, n_rejected) completion tokens
        common = out["chosen_tokens"].minimum(out["rejected_tokens"]).unsqueeze(-1)
        for side, mask in (("chosen", chosen), ("rejected", rejected)):
            out[side + "_shared"] = logps.where(mask & (mask.cumsum(-1) <= common), zero).sum(-1)
    return out


def objective_loss(
    objective: str,
    options: dict[str, Any],
    policy: dict[str, Any],
    reference: dict[str, Any] | None,
    *,
    desirable: Any = None,
    counted: Any = None,
    margin: Any = None,
    mean_across_processes: Callable[[Any], Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The micro-batch's loss and the per-row statistics behind it.

    Args:
        objective: one of :data:`OBJECTIVES`.
        options: the objective's table (``beta`` and its own options).
        policy: :func:`sequence_logps` of the model being trained (for ``reward``, its
            :func:`reward_scores`).
        reference: the same of the reference model (``chosen``/``rejected``/``kl``), None
            for the reference-free objectives.
        desirable: the unpaired objectives (KTO, APO-zero unpaired): each row's label.
        counted: a filled-up held-out micro-batch's ``counted`` (see :func:`collate`): the loss,
            the statistics and KTO's KL estimate are those of these rows alone (all of them if
            None); with none, the loss is NaN and the statistics empty.
        margin: ``reward``: each pair's margin (float per row), subtracted from the reward
            difference, ``-log sigmoid(r_chosen - r_rejected - margin)``, as TRL's RewardTrainer
            takes a ``margin`` column; None: no margin.
        mean_across_processes: KTO: the mean of a scalar over the processes (its KL
            estimate is the mean over every process's micro-batch, as TRL takes it).

    Returns:
        ``(loss, stats)``: stats hold per-row tensors ``rewards_chosen``, ``rewards_rejected``,
        ``logps_chosen``, ``logps_rejected`` (a reward model: the scores, and no log-probabilities) (for the unpaired objectives, the desirable and undesirable rows'
        rewards and log-probabilities, possibly empty) and, for KTO, the scalar ``kl``.
    """
    import torch
    import torch.nn.functional as F

    if counted is not None:  # every entry of policy and reference is per row
        keep = torch.as_tensor(counted, dtype=torch.bool, device=policy["chosen"].device)
        policy = {k: v[keep] for k, v in policy.items()}
        reference = None if reference is None else {k: v[keep] for k, v in reference.items()}
        desirable = None if desirable is None else torch.as_tensor(desirable, dtype=torch.bool, device=keep.device)[keep]
        margin = None if margin is None else torch.as_tensor(margin, device=keep.device)[keep]
    c, r = policy["chosen"], policy["rejected"]
    if margin is not None and objective != "reward":
        raise ValueError(f"a margin applies to the reward objective, not {objective!r}")
    if objective == "reward":
        loss = -F.logsigmoid(c - r - (0.0 if margin is None else torch.as_tensor(margin, dtype=c.dtype, device=c.device))).mean()
        center = float(options.get("center_rewards_coefficient") or 0.0)
        if center:
            loss = loss + center * torch.mean((c + r) ** 2)
        return loss, {"rewards_chosen": c.detach(), "rewards_rejected": r.detach()}
    beta = float(options["beta"])
    n_c, n_r = policy["chosen_tokens"].clamp(min=1), policy["rejected_tokens"].clamp(min=1)
    if objective in UNPAIRED:
        return _unpaired(objective, options, policy, reference, desirable, mean_across_processes)
    if objective in REFERENCE_FREE:
        avg_c, avg_r = c / n_c, r / n_r
        if objective == "simpo":
            logits = (avg_c - avg_r) - float(options["gamma"]) / beta
            losses = -F.logsigmoid(beta * logits)
            loss = losses.mean()
        else:  # orpo
            log_odds = (avg_c - avg_r) - (_log1mexp(avg_c) - _log1mexp(avg_r))
            # the chosen side's cross-entropy over its prompt and completion, as TRL's ORPOTrainer takes it
            nll = -policy["chosen_all"].sum() / policy["chosen_all_tokens"].sum().clamp(min=1)
            loss = nll - beta * F.logsigmoid(log_odds).mean()
        stats = {"rewards_chosen": beta * avg_c.detach(), "rewards_rejected": beta * avg_r.detach()}
        logged = c, r
    else:
        # LD-DPO: each side's log-probability is its shared part plus ld_alpha times the rest (policy and reference)
        (lc, lr), (ref_c, ref_r) = _desensitised(options, policy), _desensitised(options, reference)
        logged = lc, lr
        ratio_c, ratio_r = lc - ref_c, lr - ref_r
        sides = _Sides(lc, lr, ref_c, ref_r, n_c, n_r)
        losses = _paired_losses(objective, options, sides, beta)
        extra = options.get("extra_losses") or {}
        if extra or "objective_weight" in options:  # a sum of TRL's losses, each weighted (MPO)
            plain = {k: v for k, v in options.items() if k != "label_smoothing"}  # the others read no label smoothing
            terms = [(float(options.get("objective_weight", 1.0)), losses)]
            terms += [(float(w), _paired_losses(name, plain, sides, beta)) for name, w in extra.items()]
        else:
            terms = [(1.0, losses)]
        if options.get("wpo"):  # WPO: each pair weighted by the policy's (aligned, per-token mean) probability of both sides
            weights = torch.exp(policy["chosen_wpo"] / n_c + policy["rejected_wpo"] / n_r)
            terms = [(w, t * weights) for w, t in terms]
        loss = sum(w * t.mean() for w, t in terms)
        stats = {"rewards_chosen": beta * ratio_c.detach(), "rewards_rejected": beta * ratio_r.detach()}
    sft = float(options.get("sft_weight") or 0.0)
    if sft:  # RPO (CPO-SimPO): the chosen completions' negative log-likelihood beside the objective
        wpo = weights if options.get("wpo") else None  # WPO weighs this term's pairs too, as TRL does
        if options.get("sft_average") == "sequences":  # per completion, then over the pairs (LLaMA-Factory)
            per_pair = -(c / n_c)
            nll = per_pair.mean() if wpo is None else (per_pair * wpo).mean()
        else:  # over every chosen completion token of the micro-batch (TRL's sft loss, CPO's cpo_alpha term)
            nll = -c.sum() / policy["chosen_tokens"].sum().clamp(min=1)
            nll = nll if wpo is None else nll * wpo.mean()
        loss = loss + sft * nll
        if c.numel():  # logged as sft_nll (a micro-batch of fillers alone has none)
            stats["sft_nll"] = nll.detach().reshape(1)
    stats.update(logps_chosen=logged[0].detach(), logps_rejected=logged[1].detach())
    return loss, stats


class _Sides(NamedTuple):
    """What the paired objectives with a reference read: the policy's and the reference's chosen and rejected
    log-probabilities (under LD-DPO desensitised) and each side's completion tokens."""

    lc: Any
    lr: Any
    ref_c: Any
    ref_r: Any
    n_c: Any
    n_r: Any


def _paired_losses(objective: str, options: dict[str, Any], sides: _Sides, beta: float) -> Any:
    """The per-pair losses of a paired objective with a reference (see the module's docstring)."""
    import torch
    import torch.nn.functional as F

    lc, lr, ref_c, ref_r, n_c, n_r = sides
    ratio_c, ratio_r = lc - ref_c, lr - ref_r
    # the f-divergence's f'(pi / pi_ref) of each side (its log-ratio under the reverse KL, DPO's own)
    score_c, score_r = _divergence_score(options, ratio_c), _divergence_score(options, ratio_r)
    delta = score_c - score_r
    eps = float(options.get("label_smoothing") or 0.0)
    if objective == "dpo":
        losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    elif objective in ("ipo", "dpo_norm"):  # over the scores averaged per completion token
        delta = score_c / n_c - score_r / n_r
        losses = (delta - 1 / (2 * beta)) ** 2 if objective == "ipo" else -F.logsigmoid(beta * delta)
    elif objective == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif objective == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    elif objective == "exo_pair":  # KL(q || p) with q = the model's preference, p = (1 - eps, eps)
        z = beta * delta
        losses = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps))
    elif objective in ("aot", "aot_unpaired"):  # the micro-batch's sorted values, paired by rank
        if objective == "aot":
            first, second = torch.sort(lc - lr).values, torch.sort(ref_c - ref_r).values
        else:
            first, second = torch.sort(ratio_c).values, torch.sort(ratio_r).values
        z = beta * (first - second)
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif objective == "discopop":
        z = beta * delta
        blend = torch.sigmoid(z / float(options["tau"]))
        losses = -F.logsigmoid(z) * (1 - blend) + torch.exp(-z) * blend
    elif objective == "bco_pair":
        losses = -F.logsigmoid(beta * ratio_c) - F.logsigmoid(-beta * ratio_r)
    elif objective == "nca_pair":
        losses = -F.logsigmoid(beta * ratio_c) - 0.5 * F.logsigmoid(-beta * ratio_c) - 0.5 * F.logsigmoid(-beta * ratio_r)
    elif objective == "sppo_hard":
        losses = (ratio_c - 0.5 / beta) ** 2 + (ratio_r + 0.5 / beta) ** 2
    elif objective == "apo_zero":
        losses = (1 - torch.sigmoid(beta * ratio_c)) + torch.sigmoid(beta * ratio_r)
    elif objective == "apo_down":
        losses = torch.sigmoid(beta * ratio_c) + (1 - torch.sigmoid(beta * (ratio_c - ratio_r)))
    else:
        raise ValueError(f"unknown objective {objective!r}; one of {', '.join(OBJECTIVES)}")
    return losses


def _desensitised(options: dict[str, Any], logps: dict[str, Any]) -> tuple[Any, Any]:
    """The chosen and rejected log-probabilities an objective reads: the sums over the completions, or under LD-DPO
    (``ld_alpha``; Liu et al. 2024, as TRL computes it) each side's shared part (its first min(chosen tokens,
    rejected tokens) completion tokens) plus ``ld_alpha`` times the rest, so the longer side's extra tokens weigh less."""
    alpha = options.get("ld_alpha")
    if alpha is None:
        return logps["chosen"], logps["rejected"]
    return tuple(logps[f"{k}_shared"] + float(alpha) * (logps[k] - logps[f"{k}_shared"]) for k in ("chosen", "rejected"))


def _unpaired(
    objective: str, options: dict[str, Any], policy: dict, reference: dict, desirable: Any, mean_across_processes: Callable | None
) -> tuple[Any, dict]:
    """KTO's or APO-zero-unpaired's loss: the mean over the micro-batch's examples, desirable ones first (as TRL's
    KTOTrainer concatenates them); KTO's with its KL estimate (also a statistic)."""
    import torch

    beta = float(options["beta"])
    desirable = torch.as_tensor(desirable, dtype=torch.bool, device=policy["chosen"].device)  # a list in the sides layout
    ratio = policy["chosen"] - reference["chosen"]
    good, bad = ratio[desirable], ratio[~desirable]
    logps = policy["chosen"].detach()
    stats = {
        "rewards_chosen": beta * good.detach(),
        "rewards_rejected": beta * bad.detach(),
        "logps_chosen": logps[desirable],
        "logps_rejected": logps[~desirable],
    }
    if objective == "kto":
        kl = (policy["kl"] - reference["kl"]).mean().detach()
        if mean_across_processes is not None:
            kl = mean_across_processes(kl)
        kl = kl.clamp(min=0)
        good_losses, bad_losses = 1 - torch.sigmoid(beta * (good - kl)), 1 - torch.sigmoid(beta * (kl - bad))
        stats["kl"] = kl
    else:  # apo_zero_unpaired: raise the desirable completions' likelihood, lower the undesirable ones'
        good_losses, bad_losses = 1 - torch.sigmoid(beta * good), torch.sigmoid(beta * bad)
    losses = torch.cat([float(options["desirable_weight"]) * good_losses, float(options["undesirable_weight"]) * bad_losses])
    return losses.mean(), stats


def _divergence_score(options: dict[str, Any], ratio: Any) -> Any:
    """f'(exp u) of a log-ratio u under ``options["divergence"]`` (f-DPO; TRL's ``f_divergence_type``): u itself for the
    reverse KL (the default), 1 - exp(-u) for the forward KL, log 2 + log sigmoid(u) for Jensen-Shannon, and
    (exp((alpha - 1) u) - 1) / (alpha - 1) for the alpha-divergence (its exponent clamped at 80 in float32, as TRL
    clamps it; alpha 1 is the reverse KL)."""
    import torch
    import torch.nn.functional as F

    divergence = options.get("divergence") or "reverse_kl"
    if divergence == "reverse_kl":
        return ratio
    if divergence == "forward_kl":
        return 1 - torch.exp(-ratio)
    if divergence == "js_divergence":
        return math.log(2) + F.logsigmoid(ratio)
    if divergence == "alpha_divergence":
        alpha = float(options.get("divergence_alpha", 0.5))
        if abs(alpha - 1.0) < 1e-6:
            return ratio
        t = torch.clamp(((alpha - 1.0) * ratio).float(), max={torch.float16: 11.0}.get(ratio.dtype, 80.0))
        return (torch.exp(t) - 1.0).to(ratio.dtype) / (alpha - 1.0)
    raise ValueError(f"unknown divergence {divergence!r}")


def _log1mexp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2."""
    import torch

    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


# --------------------------------------------------------------------------- the training script's helpers


class Tally:
    """Sums of the objectives' statistics over micro-batches, reduced over processes when read.

    ``means`` gives ``rewards_chosen``, ``rewards_rejected``, ``reward_margin`` (mean chosen
    less mean rejected reward; per pair for paired data), ``reward_accuracy`` (paired: the
    share of pairs whose chosen reward is higher), ``logps_chosen``, ``logps_rejected``,
    for KTO ``kl``, and with an ``sft_weight`` ``sft_nll`` (the supervised term's negative
    log-likelihood, averaged over micro-batches).
    """

    KEYS = ("rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected", "reward_margin", "reward_accuracy", "kl", "sft_nll")

    def __init__(self, device: Any, unpaired: bool = False) -> None:
        import torch

        self.unpaired = unpaired  # the statistics of KTO's or APO-zero unpaired's examples: no pairs, no per-pair margins
        self.sums = torch.zeros(len(self.KEYS), device=device, dtype=torch.float64)
        self.counts = torch.zeros(len(self.KEYS), device=device, dtype=torch.float64)

    def add(self, stats: dict[str, Any]) -> None:
        values = {k: stats[k] for k in self.KEYS[:4] if k in stats}  # a reward model has no log-probabilities
        if "kl" in stats:
            values["kl"] = stats["kl"].reshape(1)
        if not self.unpaired:  # paired: per-pair margins and wins
            margin = stats["rewards_chosen"] - stats["rewards_rejected"]
            values["reward_margin"] = margin
            values["reward_accuracy"] = (margin > 0).double()
        if "sft_nll" in stats:  # one per micro-batch: its supervised term's negative log-likelihood
            values["sft_nll"] = stats["sft_nll"]
        for i, key in enumerate(self.KEYS):
            if key in values:
                self.sums[i] += values[key].double().sum()
                self.counts[i] += values[key].numel()

    def means(self, reduce: Callable[[Any], Any]) -> dict[str, float]:
        """The means over every process (``reduce`` sums a tensor over them); keys with no value are left out."""
        import torch

        totals = reduce(torch.cat([self.sums, self.counts]))
        sums, counts = totals[: len(self.KEYS)], totals[len(self.KEYS) :]
        out = {k: (s / c).item() for k, s, c in zip(self.KEYS, sums, counts) if c > 0}
        if "reward_margin" not in out and "rewards_chosen" in out and "rewards_rejected" in out:
            out["reward_margin"] = out["rewards_chosen"] - out["rewards_rejected"]  # unpaired: the difference of the means
        return out


class WithReference:
    """Rows with their precomputed reference log-probabilities (``reference``: chosen, rejected); filled before training."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows
        self.values: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.values is None:
            raise RuntimeError("the reference log-probabilities were not computed")
        return {**self.rows[i], "reference": self.values[i]}


def sync_reference(model: Any, reference: Any, alpha: float) -> None:
    """TR-DPO's soft update of a live reference copy (TRL's ``SyncRefModelCallback``): each of its parameters times
    ``1 - alpha`` plus ``alpha`` times the policy's. Every process calls it.

    The copy is built as the policy is, parameter for parameter, and sharded as it is:

    - one process, DDP, ZeRO-1 and 2: whole tensors (``model`` unwrapped);
    - FSDP (:func:`fsdp_reference`; ``model`` as accelerate prepared it, FSDP 1's wrapper included): each process
      updates its own shards, FSDP 2's DTensors or FSDP 1's flat parameters, which hold the same slices of both
      models, so nothing is gathered;
    - ZeRO-3 (:func:`zero3_reference`, a DeepSpeed engine; ``model`` unwrapped): each pair of parameters is gathered
      in turn, updated on the main process and partitioned again, as TRL syncs under ZeRO-3 (TRL gathers the whole
      model at once).
    """
    import torch

    with torch.no_grad():
        if _zero3(reference):
            import deepspeed
            import torch.distributed as dist

            own = dict(model.named_parameters())
            main = dist.get_rank() == 0
            for name, ref in reference.module.named_parameters():
                with deepspeed.zero.GatheredParameters([ref, own[name]], modifier_rank=0):
                    if main:
                        ref.data.mul_(1.0 - alpha).add_(own[name].data, alpha=alpha)
            return
        for ref, param in zip(reference.parameters(), model.parameters(), strict=True):
            if ref.shape != param.shape:
                raise ValueError(f"the reference copy is not sharded as the policy is: {tuple(ref.shape)} against {tuple(param.shape)}")
            ref.mul_(1.0 - alpha).add_(param.detach(), alpha=alpha)


def _zero3(reference: Any) -> bool:
    """Whether the reference is a DeepSpeed engine over ZeRO-3-partitioned parameters (zero3_reference's)."""
    return any(hasattr(p, "ds_tensor") for p in reference.parameters())


def _sharded(reference: Any) -> bool:
    """Whether FSDP shards the reference: FSDP 2's DTensor parameters, or FSDP 1's wrapper."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(type(p).__name__ == "DTensor" for p in reference.parameters()):
        return True
    return any(isinstance(m, FullyShardedDataParallel) for m in reference.modules())


class CheckpointedReference:
    """TR-DPO's live reference as checkpoints keep it (``accelerator.register_for_checkpointing``): the copy whole,
    as its state dict, whatever shards it, so that a resumed run goes on from the reference it had.

    accelerate calls ``state_dict`` on every process and writes the main process's, and calls ``load_state_dict``
    on every process with the file's contents, so both may be collective:

    - a whole copy (one process, DDP, ZeRO-1 and 2): its own state dict;
    - FSDP: torch's ``get_model_state_dict`` and ``set_model_state_dict`` with ``full_state_dict`` (gathered
      into the main process's CPU memory, shard by shard; on loading, each process keeps its shards of it);
    - ZeRO-3: each parameter gathered in turn, the main process keeping a CPU copy; on loading, each is
      gathered again, the main process copies the saved values in, and it is partitioned again. The buffers
      are not kept: the copy's are the policy's, which never change.

    Args:
        reference: the copy as the script built it (:func:`fsdp_reference`, :func:`zero3_reference` or a frozen
            ``deepcopy`` of the model).
    """

    def __init__(self, reference: Any) -> None:
        self.reference = reference

    def state_dict(self) -> dict[str, Any]:
        if _zero3(self.reference):
            import deepspeed
            import torch.distributed as dist

            kept = {}
            for name, param in self.reference.module.named_parameters():
                with deepspeed.zero.GatheredParameters([param]):
                    if dist.get_rank() == 0:
                        kept[name] = param.data.detach().to("cpu", copy=True)
            return kept
        if _sharded(self.reference):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.reference, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.reference.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        if _zero3(self.reference):
            import deepspeed
            import torch.distributed as dist

            with torch.no_grad():
                for name, param in self.reference.module.named_parameters():
                    with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                        if dist.get_rank() == 0:
                            param.data.copy_(state[name])
            return
        if _sharded(self.reference):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.reference, state, options=StateDictOptions(full_state_dict=True))
            return
        self.reference.load_state_dict(state)


def zero3_reference(accelerator: Any, model: Any) -> Any:
    """A frozen copy of the policy as it is now, for a live reference under DeepSpeed ZeRO-3.

    The policy's parameters are partitioned across the processes, so no process can copy the
    model whole. As TRL prepares its reference model under ZeRO-3, the copy is a model of the
    policy's config built partitioned (transformers builds it inside ``zero.Init`` while
    accelerate's DeepSpeed config is active) and wrapped in a DeepSpeed engine of the run's
    config with no optimizer (stage 3, so its weights stay partitioned; small buckets, as it
    only runs forward passes). Each parameter is then gathered with the policy's and copied
    (all processes take part). Its forward passes are collective: every process must score
    every micro-batch, as the training loop does.
    """
    import copy

    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM

    policy = accelerator.unwrap_model(model)
    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    hidden = getattr(policy.config.get_text_config(), "hidden_size", None)
    if hidden:  # TRL's settings for a model that runs forward only
        zero.update(
            reduce_bucket_size=hidden * hidden,
            stage3_param_persistence_threshold=10 * hidden,
            stage3_prefetch_bucket_size=int(0.9 * hidden * hidden),
        )
    reference = AutoModelForCausalLM.from_config(policy.config, dtype=policy.dtype)
    # under sequence parallelism the policy's engine has accelerate's process groups (its data-parallel size is
    # num_processes / sp_size): the copy takes the same, so its batch sizes agree and it is partitioned alike
    engine, *_ = deepspeed.initialize(model=reference, config=config, mpu=getattr(model, "mpu", None))
    own = dict(policy.named_parameters())
    with torch.no_grad():
        for name, param in engine.module.named_parameters():
            with deepspeed.zero.GatheredParameters([param, own[name]], modifier_rank=0):
                if accelerator.is_main_process:
                    param.data.copy_(own[name].data)
    engine.module.eval().requires_grad_(False)
    return engine


def fsdp_reference(policy: Any, shard: Callable[[Any], Any], *, device: Any, dtype: Any, trust_remote_code: bool = False) -> Any:
    """A frozen copy of the policy as it is now, for a live reference under FSDP.

    The policy is sharded across the processes, so no process holds it whole, and a whole copy on
    every process is what sharding avoids. As TRL prepares its reference model under FSDP
    (``prepare_fsdp``), the copy is sharded as the policy is: a model of the policy's config is
    built on the meta device (no memory), frozen (evaluation mode, no gradient) and handed to
    ``shard``; each process then allocates its own shards only and copies the policy's shards into
    them from the policy's sharded state dict (no parameter is gathered), and the buffers, which
    FSDP does not shard, from the policy's. Its forward passes are collective, as the policy's are:
    every process must score every micro-batch, as the training loop does.

    Args:
        policy: the sharded model that trains (as accelerate prepared it: FSDP 1's wrapper
            included), before any step or checkpoint changed it.
        shard: applies FSDP to a model built on the meta device, with the policy's units:
            ``sharding.shard`` (torch's fully_shard, FSDP 2, in place) or
            :func:`fsdp_plugin_shard` (accelerate's FSDP plugin; FSDP 1 returns a wrapper, which
            is then the reference).
        device: where FSDP 2 keeps the shards (the process's device; the CPU under CPU offload).
        dtype: the copy's weights (the model's dtype as it was loaded; FSDP's mixed precision
            keeps float32 master weights of what trains, which a frozen copy does not need).
        trust_remote_code: model.trust_remote_code, for a model class that comes with the model.
    """
    import torch
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        reference = AutoModelForCausalLM.from_config(policy.config, dtype=dtype, trust_remote_code=trust_remote_code)
    reference.eval().requires_grad_(False)
    wrapped = shard(reference)
    if isinstance(wrapped, torch.nn.Module):
        reference = wrapped
    if any(p.is_meta for p in reference.parameters()):  # FSDP 2 shards on the meta device: allocate the shards
        reference.to_empty(device=device)
    set_model_state_dict(reference, get_model_state_dict(policy))  # shard by shard, every parameter
    own = {_plain_name(name): b for name, b in policy.named_buffers()}
    for name, _ in list(reference.named_buffers()):
        parent, _, leaf = name.rpartition(".")
        setattr(reference.get_submodule(parent), leaf, own[_plain_name(name)].detach().clone())  # on the policy's device
    return reference


def fsdp_plugin_shard(accelerator: Any) -> Callable[[Any], Any]:
    """Shards a model built on the meta device as accelerate's FSDP plugin sharded the policy, for
    :func:`fsdp_reference`: TRL's ``prepare_fsdp`` (FSDP 1: the ``FullyShardedDataParallel``
    wrapper with the plugin's settings; FSDP 2: ``fully_shard`` with its mixed precision, offload
    and device mesh), with the plugin's units (each transformer layer, or each module above its
    size) as accelerate wraps the policy.

    Unlike TRL, every unit frees its gathered parameters after its forward, whatever the sharding
    strategy says: a model that runs no backward pass would otherwise keep them gathered for good.
    """
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version == 1:
        from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

        def shard_v1(model: Any) -> Any:
            # FSDP 1 shards a whole model (it moves each unit to the device, then keeps its shard):
            # the copy's memory on the CPU, its values filled in by fsdp_reference
            model.to_empty(device="cpu")
            model.tie_weights()
            plugin.set_auto_wrap_policy(model)
            strategy = plugin.sharding_strategy or plugin.reshard_after_forward
            strategy = {
                ShardingStrategy.SHARD_GRAD_OP: ShardingStrategy.FULL_SHARD,
                ShardingStrategy._HYBRID_SHARD_ZERO2: ShardingStrategy.HYBRID_SHARD,
            }.get(strategy, strategy)
            return FullyShardedDataParallel(
                model,
                sharding_strategy=strategy,
                cpu_offload=plugin.cpu_offload,
                auto_wrap_policy=plugin.auto_wrap_policy,
                mixed_precision=plugin.mixed_precision_policy,
                sync_module_states=False,  # every process copies its shards from the policy's
                backward_prefetch=plugin.backward_prefetch,
                forward_prefetch=plugin.forward_prefetch,
                use_orig_params=plugin.use_orig_params,
                limit_all_gathers=plugin.limit_all_gathers,
                device_id=accelerator.device,
            )

        return shard_v1
    if plugin.fsdp_version != 2:
        raise ValueError(f"FSDP version {plugin.fsdp_version} is not supported")
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = getattr(accelerator, "torch_device_mesh", None)
    options = {
        "reshard_after_forward": True,
        "offload_policy": plugin.cpu_offload,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        "mesh": mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)] if mesh is not None else None,
    }

    def shard_v2(model: Any) -> Any:
        wrap = fsdp2_prepare_auto_wrap_policy(plugin, model)
        if wrap is not None:
            for module in [m for m in model.modules() if m is not model and wrap(m)]:
                fully_shard(module, **options)
        fully_shard(model, **options)
        return model

    return shard_v2


def _plain_name(name: str) -> str:
    """A buffer's name without the wrappers' parts (FSDP 1, activation checkpointing, torch.compile)."""
    for part in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(part, "")
    return name


def weights_sha256(model: Any) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes, bytes): what a precomputed reference is keyed by."""
    import hashlib

    import torch

    h = hashlib.sha256(b"recipec-weights-v1\0")
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, tensor in sorted(model.state_dict().items()):
        t = _whole(params.get(name), tensor).to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _whole(param: Any, tensor: Any) -> Any:
    """A state-dict tensor as the whole model holds it, on every process: a parameter that DeepSpeed's
    ZeRO-3 partitioned is gathered (its state-dict entry is empty), an FSDP shard (a DTensor) too.
    Collective in both cases, so every process hashes the same entries in the same order."""
    if param is not None and hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()
    if hasattr(tensor, "full_tensor"):
        return tensor.full_tensor().detach()
    return tensor.detach()


def precompute_reference(
    model: Any, rows: Any, path: Any, *, collate: Callable, batch_size: int, accelerator: Any, shared: bool = False
) -> Any:
    """Reference log-probabilities ``[len(rows), 2]`` (chosen, rejected sums) of every row; with ``shared``
    (LD-DPO) ``[len(rows), 4]``, their shared parts after them (:func:`sequence_logps`).

    Read from ``path`` when it exists; else every process scores its share of the rows (in
    evaluation mode, without gradient), the shares are gathered, and the main process writes
    ``path`` (whole or not at all). ``model`` is the reference: the model as it starts, its
    adapter disabled by the caller under PEFT.
    """
    import os

    import torch
    from accelerate.utils import gather_object

    path = os.fspath(path)
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    # the same number of rows on every process (wrapping around): under FSDP every forward pass
    # is collective, so no process may run one more than another
    world = accelerator.num_processes
    share = -(-len(rows) // world)
    mine = [(accelerator.process_index + world * k) % len(rows) for k in range(share)]
    scored: list[tuple] = []
    keys = ("chosen", "rejected", "chosen_shared", "rejected_shared") if shared else ("chosen", "rejected")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            idx = mine[start : start + batch_size]
            batch = {k: v.to(accelerator.device) if hasattr(v, "to") else v for k, v in collate([rows[i] for i in idx]).items()}
            with accelerator.autocast():
                logps = sequence_logps(model, batch, shared=shared)
            scored += zip(idx, *(logps[k].tolist() for k in keys))
    model.train(was_training)
    values = torch.zeros(len(rows), len(keys), dtype=torch.float32)
    for i, *v in gather_object(scored) if accelerator.num_processes > 1 else scored:
        values[i] = torch.tensor(v)
    if accelerator.is_main_process:
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(values, tmp)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    return values
