"""The preference objectives against TRL's trainers, on the same model and batch.

Each test builds a TRL trainer over a tiny Llama and a few pairs, takes one batch from
TRL's own data loader (TRL tokenizes and pads it), turns that batch into recipec's rows
(each pair one row of two segments) and checks that the loss, the rewards and the gradient
of every parameter agree within 1e-5.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from recipec.runtime import preference as P  # noqa: E402
from recipec.runtime.data import FILLER  # noqa: E402

from .chat_fixtures import IM_END, chat_tokenizer  # noqa: E402

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
TOL = 1e-5
BETA = 0.3

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue today.", "rejected": " a teapot"},
    {"prompt": "Python is a", "chosen": " programming language.", "rejected": " snake that eats mice"},
    {"prompt": "Two plus two", "chosen": " is four.", "rejected": " is five, or six"},
]
CONVERSATION_PAIRS = [
    {
        "prompt": [{"role": "user", "content": "What colour is the sky?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Loud, mostly."}],
    },
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a snake."}],
        "chosen": [{"role": "assistant", "content": "A python."}],
        "rejected": [{"role": "assistant", "content": "Guido."}],
    },
]
UNPAIRED = [
    {"prompt": "The sky is", "completion": " blue today.", "label": True},
    {"prompt": "Python is a", "completion": " snake that eats mice", "label": False},
    {"prompt": "Two plus two", "completion": " is four.", "label": True},
    {"prompt": "Water is", "completion": " dry", "label": False},
]


@pytest.fixture(scope="module")
def tok():
    t = chat_tokenizer()
    t.eos_token = IM_END
    t.pad_token = IM_END
    return t


@pytest.fixture(scope="module")
def models(tok):
    """(policy, reference): a random tiny Llama and a perturbed copy, so the log-ratios are not zero."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    reference = LlamaForCausalLM(config)
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy, reference


@pytest.fixture(scope="module")
def reward_model(tok):
    """A random tiny Llama with a one-label score head (a reward model), padding told by the tokenizer's pad token."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_labels=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    return LlamaForSequenceClassification(config)


def _args(config_cls, tmp_path, **kw):
    return config_cls(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, **kw)


def _dataset(records):
    from datasets import Dataset

    return Dataset.from_list(records)


def _ours(policy, reference, rows, pad_id, objective, options, **kw):
    """recipec's loss and stats on ``rows``, with a fresh copy of the policy (its gradients filled); the sums WPO
    and LD-DPO read are computed when the options name them, as the training script asks for them."""
    model = copy.deepcopy(policy)
    model.train()
    batch = P.collate(rows, pad_id, unpaired=objective in P.UNPAIRED, kl=objective == "kto")
    shared = options.get("ld_alpha") is not None
    logps = P.sequence_logps(model, batch, wpo=bool(options.get("wpo")), shared=shared)
    ref = None
    if reference is not None:
        with torch.no_grad():
            ref = P.sequence_logps(reference, batch, shared=shared)
    loss, stats = P.objective_loss(objective, options, logps, ref, desirable=batch.get("desirable"), **kw)
    loss.backward()
    return model, loss, stats


def _trl_step(trainer):
    """The batch of TRL's own loader, its loss (backward run: the gradients filled) and the metrics it logged."""
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return batch, loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def _assert_same_gradients(theirs, ours, tol=TOL):
    worst = 0.0
    for (name, a), (_, b) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            worst = max(worst, (a.grad - b.grad).abs().max().item())
    assert worst < tol, f"largest gradient difference {worst}"


def _dpo_rows(batch):
    """recipec rows from a DPOTrainer batch (chosen rows first, then rejected); a RewardTrainer batch, which has no
    completion mask, gives rows whose masks are all 0."""
    n = batch["input_ids"].shape[0] // 2
    rows = []
    for i in range(n):
        sides = []
        for j in (i, n + i):
            keep = batch["attention_mask"][j].bool()
            ids = batch["input_ids"][j][keep].tolist()
            sides.append((ids, batch["completion_mask"][j][keep].tolist() if "completion_mask" in batch else [0] * len(ids)))
        rows.append(P.pair_row(*sides))
    return rows


def _dpo_trainer(tmp_path, tok, policy, reference, pairs, **config):
    from trl import DPOConfig, DPOTrainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(reference),
            args=_args(DPOConfig, tmp_path, beta=BETA, max_length=None, **config),
            train_dataset=_dataset(pairs),
            processing_class=tok,
        )
    trainer.model.train()
    return trainer


DPO_FAMILY = [
    ("dpo", "sigmoid", {}), ("ipo", "ipo", {}), ("hinge", "hinge", {}), ("robust", "robust", {"label_smoothing": 0.2}),
    ("bco_pair", "bco_pair", {}), ("nca_pair", "nca_pair", {}), ("sppo_hard", "sppo_hard", {}),
    ("apo_zero", "apo_zero", {}), ("apo_down", "apo_down", {}), ("dpo_norm", "sigmoid_norm", {}),
    ("exo_pair", "exo_pair", {"label_smoothing": 1e-3}), ("aot", "aot", {"label_smoothing": 0.1}), ("aot_unpaired", "aot_unpaired", {}),
    # tau 0.5: the default 0.05 scales z by 20 inside a sigmoid, so float32 rounding of the log-probabilities, which
    # depends on the thread count, reached 1.8e-4 in the gradients
    ("discopop", "discopop", {"tau": 0.5}),
    # f-DPO: the divergences, each with an objective built on the score difference
    ("dpo", "sigmoid", {"divergence": "forward_kl"}), ("dpo_norm", "sigmoid_norm", {"divergence": "js_divergence"}),
    ("hinge", "hinge", {"divergence": "alpha_divergence", "divergence_alpha": 0.3}), ("ipo", "ipo", {"divergence": "forward_kl"}),
    ("robust", "robust", {"label_smoothing": 0.2, "divergence": "js_divergence"}),
    ("exo_pair", "exo_pair", {"label_smoothing": 1e-3, "divergence": "alpha_divergence"}),
    ("discopop", "discopop", {"tau": 0.5, "divergence": "forward_kl"}),
]  # fmt: skip
"""recipec's objective, TRL's DPOTrainer loss_type, and the options both take (under the names of :data:`TRL_NAMES`)."""

TRL_NAMES = {"tau": "discopop_tau", "divergence": "f_divergence_type", "divergence_alpha": "f_alpha_divergence_coef"}
"""recipec's option -> TRL's DPOConfig field, where the names differ."""


def _family_id(case):
    objective, _, options = case
    return "-".join([objective, *(str(v) for k, v in options.items() if k.startswith("divergence"))])


@pytest.mark.parametrize("pairs", [PAIRS, CONVERSATION_PAIRS], ids=["strings", "conversations"])
@pytest.mark.parametrize(("objective", "loss_type", "options"), DPO_FAMILY, ids=[_family_id(c) for c in DPO_FAMILY])
def test_dpo_family_equals_trl(tmp_path, tok, models, objective, loss_type, options, pairs):
    policy, reference = models
    trl_options = {TRL_NAMES.get(k, k): v for k, v in options.items()}
    trainer = _dpo_trainer(tmp_path, tok, policy, reference, pairs, loss_type=[loss_type], per_device_train_batch_size=len(pairs), **trl_options)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    ours, our_loss, stats = _ours(policy, reference, _dpo_rows(batch), tok.pad_token_id, objective, {"beta": BETA, **options})
    # sppo_hard squares (log-ratio -+ 1 / (2 beta)) = about -+5: float32 rounding of a log-ratio, 1e-6, becomes 1e-5
    # in its loss (about 8) and its gradients; the forward KL's exp(-log-ratio) scales the gradients up to about 2.
    # The tolerance grows with the loss and the largest gradient (every other loss and gradient here is below 1)
    largest = max(p.grad.abs().max().item() for p in trainer.model.parameters() if p.grad is not None)
    tol = TOL * max(1.0, loss.item(), largest)
    assert our_loss.item() == pytest.approx(loss.item(), abs=tol)
    assert stats["rewards_chosen"].mean().item() == pytest.approx(metrics["rewards/chosen"], abs=TOL)
    assert stats["rewards_rejected"].mean().item() == pytest.approx(metrics["rewards/rejected"], abs=TOL)
    margins = stats["rewards_chosen"] - stats["rewards_rejected"]
    assert margins.mean().item() == pytest.approx(metrics["rewards/margins"], abs=TOL)
    assert (margins > 0).float().mean().item() == pytest.approx(metrics["rewards/accuracies"], abs=TOL)
    assert stats["logps_chosen"].mean().item() == pytest.approx(metrics["logps/chosen"], abs=TOL)
    assert stats["logps_rejected"].mean().item() == pytest.approx(metrics["logps/rejected"], abs=TOL)
    _assert_same_gradients(trainer.model, ours, tol)


@pytest.mark.parametrize(("objective", "loss_type"), [("dpo", "sigmoid"), ("ipo", "ipo"), ("hinge", "hinge"), ("apo_zero", "apo_zero")])
def test_sft_weight_equals_trl_sft_loss(tmp_path, tok, models, objective, loss_type):
    """sft_weight (RPO) is TRL's `loss_type = [<objective>, "sft"]` with `loss_weights = [1, w]`: the same loss and
    gradients, over pairs of unequal completion lengths; sft_average "sequences" is LLaMA-Factory's pref_ftx, the
    chosen log-probabilities averaged per completion, then over the pairs."""
    policy, reference = models
    w = 0.7
    trainer = _dpo_trainer(
        tmp_path, tok, policy, reference, PAIRS, loss_type=[loss_type, "sft"], loss_weights=[1.0, w],
        per_device_train_batch_size=len(PAIRS),
    )  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    rows = _dpo_rows(batch)
    ours, our_loss, _ = _ours(policy, reference, rows, tok.pad_token_id, objective, {"beta": BETA, "sft_weight": w})
    _, plain, _ = _ours(policy, reference, rows, tok.pad_token_id, objective, {"beta": BETA})
    assert our_loss.item() == pytest.approx(loss.item(), abs=TOL) and abs(our_loss.item() - plain.item()) > 0.1
    _assert_same_gradients(trainer.model, ours)

    _, per_sequence, _ = _ours(policy, reference, rows, tok.pad_token_id, objective, {"beta": BETA, "sft_weight": w, "sft_average": "sequences"})
    logps = P.sequence_logps(policy, P.collate(rows, tok.pad_token_id))
    by_hand = plain.item() - w * (logps["chosen"] / logps["chosen_tokens"]).mean().item()
    assert per_sequence.item() == pytest.approx(by_hand, abs=TOL)
    assert len({int(n) for n in logps["chosen_tokens"]}) > 1 and abs(per_sequence.item() - our_loss.item()) > 1e-3  # the averages differ


WEIGHTED = [
    ("dpo", ["sigmoid"], {"use_weighting": True}, {"wpo": True}),
    ("ipo", ["ipo"], {"use_weighting": True}, {"wpo": True}),
    ("dpo", ["sigmoid"], {"ld_alpha": 0.4}, {"ld_alpha": 0.4}),
    ("aot", ["aot"], {"ld_alpha": 0.0, "label_smoothing": 0.1}, {"ld_alpha": 0.0, "label_smoothing": 0.1}),
    ("robust", ["robust"], {"ld_alpha": 0.4, "use_weighting": True, "label_smoothing": 0.2}, {"ld_alpha": 0.4, "wpo": True, "label_smoothing": 0.2}),
    ("dpo", ["sigmoid", "sft"], {"ld_alpha": 0.4, "loss_weights": [1.0, 0.5]}, {"ld_alpha": 0.4, "sft_weight": 0.5}),
    # sums of TRL's losses (extra_losses): MPO; three with WPO and LD-DPO; robust's smoothing, which TRL's sigmoid ignores
    ("dpo", ["sigmoid", "bco_pair", "sft"], {"loss_weights": [0.8, 0.2, 1.0]}, {"objective_weight": 0.8, "extra_losses": {"bco_pair": 0.2}, "sft_weight": 1.0}),
    ("ipo", ["ipo", "nca_pair", "sppo_hard"], {"loss_weights": [0.5, 0.3, 0.2], "use_weighting": True, "ld_alpha": 0.6},
     {"objective_weight": 0.5, "extra_losses": {"nca_pair": 0.3, "sppo_hard": 0.2}, "wpo": True, "ld_alpha": 0.6}),
    ("robust", ["robust", "sigmoid"], {"loss_weights": [1.0, 0.5], "label_smoothing": 0.2},
     {"extra_losses": {"dpo": 0.5}, "label_smoothing": 0.2}),
]  # fmt: skip
"""recipec's objective, TRL's loss types, TRL's DPOConfig options and recipec's: WPO (TRL's use_weighting) and
LD-DPO (ld_alpha), alone and together, LD-DPO with the supervised term, and sums of TRL's losses (extra_losses). TRL 1.16's WPO multiplies each loss
in place, which fails on its "sft" loss (an expanded scalar; see test_wpo_weighs_the_supervised_term_too) and on its
hinge loss (relu's output, which relu's backward reads)."""


@pytest.mark.parametrize(("objective", "loss_type", "config", "options"), WEIGHTED, ids=["-".join([o, *sorted(opts)]) for o, _, _, opts in WEIGHTED])
def test_wpo_and_ld_dpo_equal_trl(tmp_path, tok, models, objective, loss_type, config, options):
    """WPO weighs each pair's loss by the policy's aligned probability of both sides, LD-DPO sums each side's
    tokens past the pair's shared completion length at ld_alpha's weight, and extra_losses adds other objectives'
    losses, weighted (TRL's loss_type list): TRL's loss, rewards, log-probabilities and gradients, on pairs of
    unequal completion lengths; each option changes the loss."""
    policy, reference = models
    trainer = _dpo_trainer(tmp_path, tok, policy, reference, PAIRS, loss_type=loss_type, per_device_train_batch_size=len(PAIRS), **config)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    rows = _dpo_rows(batch)
    base = {"beta": BETA, **({"label_smoothing": options["label_smoothing"]} if "label_smoothing" in options else {})}
    ours, our_loss, stats = _ours(policy, reference, rows, tok.pad_token_id, objective, {**base, **options})
    assert our_loss.item() == pytest.approx(loss.item(), abs=TOL)
    for key, theirs in (("rewards_chosen", "rewards/chosen"), ("rewards_rejected", "rewards/rejected"), ("logps_chosen", "logps/chosen"), ("logps_rejected", "logps/rejected")):
        # (a mean log-probability near -60 is a float32 whose rounding, summed in another order, reaches 1e-5)
        assert stats[key].mean().item() == pytest.approx(metrics[theirs], abs=TOL, rel=1e-6), key
    _assert_same_gradients(trainer.model, ours)
    for option in ("wpo", "ld_alpha", "extra_losses"):  # each option changes the loss on these pairs
        if option in options:
            _, without, _ = _ours(policy, reference, rows, tok.pad_token_id, objective, {**base, **{k: v for k, v in options.items() if k != option}})
            assert abs(without.item() - our_loss.item()) > 1e-3, option


@pytest.mark.parametrize("average", ["tokens", "sequences"])
def test_wpo_weighs_the_supervised_term_too(tok, models, average):
    """With sft_weight, WPO weighs the supervised term's pairs as it weighs the objective's (TRL's intent: its "sft"
    per-pair loss times the pair weights, then the mean): over the tokens the NLL times the mean weight; over the
    sequences the mean of each pair's NLL times its weight. The weights are the exponential of each side's mean
    aligned log-probability, log p(token) - log sum_v p(v)^2, computed here from the logits."""
    policy, reference = models
    rows = _dpo_rows(next(iter(_dpo_trainer(Path(tempfile.mkdtemp()), tok, policy, reference, PAIRS, per_device_train_batch_size=3).get_train_dataloader())))
    options = {"beta": BETA, "sft_weight": 0.6, "sft_average": average}
    _, weighted, _ = _ours(policy, reference, rows, tok.pad_token_id, "dpo", {**options, "wpo": True})
    _, plain_wpo, _ = _ours(policy, reference, rows, tok.pad_token_id, "dpo", {"beta": BETA, "wpo": True})
    batch = P.collate(rows, tok.pad_token_id)
    with torch.no_grad():
        # (without a cache transformers keeps a row's two segments apart by their position ids)
        logits = policy(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[:, :-1].float()
        logp = logits.log_softmax(-1)
        token = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
        aligned = token - torch.logsumexp(2 * logp, dim=-1)
        logps = P.sequence_logps(policy, batch)
    predicted = batch["real"][:, 1:] & (batch["position_ids"][:, 1:] > 0) & batch["supervised"][:, 1:]
    sides = [predicted & ~batch["rejected"][:, 1:], predicted & batch["rejected"][:, 1:]]
    weights = torch.exp(sum((aligned * m).sum(-1) / m.sum(-1) for m in sides))
    if average == "tokens":
        nll = -logps["chosen"].sum() / logps["chosen_tokens"].sum() * weights.mean()
    else:
        nll = (-(logps["chosen"] / logps["chosen_tokens"]) * weights).mean()
    assert weights.max() - weights.min() > 0.01  # the pairs' weights differ
    assert weighted.item() == pytest.approx(plain_wpo.item() + 0.6 * nll.item(), abs=TOL)


def test_conservative_dpo_equals_trl_label_smoothing(tmp_path, tok, models):
    """DPO's label_smoothing (conservative DPO) is TRL's `aot` loss for one pair: sorting one pair changes nothing."""
    policy, reference = models
    trainer = _dpo_trainer(
        tmp_path, tok, policy, reference, PAIRS, loss_type=["aot"], label_smoothing=0.2, per_device_train_batch_size=1
    )
    for batch in trainer.get_train_dataloader():
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        ours, our_loss, _ = _ours(policy, reference, _dpo_rows(batch), tok.pad_token_id, "dpo", {"beta": BETA, "label_smoothing": 0.2})
        assert our_loss.item() == pytest.approx(loss.item(), abs=TOL)
        _assert_same_gradients(trainer.model, ours)


def _paired_rows(batch):
    """recipec rows from a CPO/ORPO batch (chosen_* and rejected_* columns, labels -100 on the prompt)."""
    rows = []
    for i in range(batch["chosen_input_ids"].shape[0]):
        sides = []
        for side in ("chosen", "rejected"):
            keep = batch[f"{side}_attention_mask"][i].bool()
            ids = batch[f"{side}_input_ids"][i][keep]
            sides.append((ids.tolist(), (batch[f"{side}_labels"][i][keep] != -100).long().tolist()))
        rows.append(P.pair_row(*sides))
    return rows


@pytest.mark.parametrize("objective", ["simpo", "simpo-cpo", "orpo"])
def test_reference_free_objectives_equal_trl(tmp_path, tok, models, objective):
    """SimPO is CPOTrainer's simpo loss, and with sft_weight its cpo_alpha (CPO-SimPO: the chosen completions'
    cross-entropy, a mean over their tokens); ORPO is ORPOTrainer's."""
    policy, _ = models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if objective.startswith("simpo"):
            from trl.experimental.cpo import CPOConfig, CPOTrainer

            alpha = 0.6 if objective == "simpo-cpo" else 0.0
            config = _args(CPOConfig, tmp_path, loss_type="simpo", cpo_alpha=alpha, simpo_gamma=0.7, beta=2.0,
                           per_device_train_batch_size=3, max_length=64)
            trainer = CPOTrainer(model=copy.deepcopy(policy), args=config, train_dataset=_dataset(PAIRS), processing_class=tok)
            options = {"beta": 2.0, "gamma": 0.7, "sft_weight": alpha}
            objective = "simpo"
        else:
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            config = _args(ORPOConfig, tmp_path, beta=BETA, per_device_train_batch_size=3, max_length=64)
            trainer = ORPOTrainer(model=copy.deepcopy(policy), args=config, train_dataset=_dataset(PAIRS), processing_class=tok)
            options = {"beta": BETA}
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, train_eval="train")
    loss.backward()
    ours, our_loss, stats = _ours(policy, None, _paired_rows(batch), tok.pad_token_id, objective, options)
    assert our_loss.item() == pytest.approx(loss.item(), abs=TOL)
    assert stats["rewards_chosen"].mean().item() == pytest.approx(float(metrics["rewards/chosen"]), abs=TOL)
    assert stats["rewards_rejected"].mean().item() == pytest.approx(float(metrics["rewards/rejected"]), abs=TOL)
    _assert_same_gradients(trainer.model, ours)


@pytest.mark.parametrize("objective", ["kto", "apo_zero_unpaired"])
def test_unpaired_objectives_equal_trl(objective, tmp_path, tok, models):
    """KTO and APO-zero unpaired (TRL's two KTO loss types) against KTOTrainer: loss, rewards, log-probabilities and
    every gradient; KTO with its KL estimate taking part, APO-zero unpaired with no mismatched pairs scored at all."""
    from trl import KTOConfig, KTOTrainer

    reference, policy = models  # this way round the KL estimate is positive, so it takes part
    options = {"beta": BETA, "desirable_weight": 1.0, "undesirable_weight": 1.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = KTOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(reference),
            args=_args(KTOConfig, tmp_path, beta=BETA, desirable_weight=1.0, undesirable_weight=1.5,
                       per_device_train_batch_size=4, max_length=None, loss_type=objective),
            train_dataset=_dataset(UNPAIRED),
            processing_class=tok,
        )
    batch, loss, metrics = _trl_step(trainer)

    rows = []
    for i in range(batch["input_ids"].shape[0]):
        keep = batch["attention_mask"][i].bool()
        rows.append(P.unpaired_row(batch["input_ids"][i][keep].tolist(), batch["completion_mask"][i][keep].tolist(), bool(batch["label"][i])))
    assert {bool(b) for b in batch["label"]} == {True, False}  # both kinds of example take part
    ours, our_loss, stats = _ours(policy, reference, rows, tok.pad_token_id, objective, options)
    assert our_loss.item() == pytest.approx(loss.item(), abs=TOL)
    if objective == "kto":
        assert stats["kl"].item() > 0.01  # the KL term takes part (it is clamped at 0)
        assert stats["kl"].item() == pytest.approx(metrics["kl"], abs=TOL)
    else:
        assert "kl" not in stats and metrics["kl"] == 0
        assert not any(k.startswith("kl_") for k in P.collate(rows, tok.pad_token_id, unpaired=True, kl=False))
    for ours_key, theirs_key in (("rewards_chosen", "rewards/chosen"), ("rewards_rejected", "rewards/rejected"),
                                 ("logps_chosen", "logps/chosen"), ("logps_rejected", "logps/rejected")):
        assert stats[ours_key].mean().item() == pytest.approx(metrics[theirs_key], abs=TOL), ours_key
    _assert_same_gradients(trainer.model, ours)


# --------------------------------------------------------------------------- rows and batches


def test_pair_row_segments_and_bits():
    row = P.pair_row(([5, 6, 7], [0, 1, 1]), ([5, 6, 8, 9], [0, 0, 1, 1]))
    assert row["input_ids"] == [5, 6, 7, 5, 6, 8, 9]
    assert row["position_ids"] == [0, 1, 2, 0, 1, 2, 3]
    assert row["mask"] == [0, 1, 1, 2, 2, 3, 3]


def test_segment_start_is_never_scored():
    """A supervised first token of the rejected side would be scored from the chosen side's last token."""
    row = P.pair_row(([5, 6], [1, 1]), ([7, 8], [1, 1]))
    assert row["mask"] == [0, 1, 2, 3]


def test_collate_pads_as_its_own_segment():
    rows = [P.pair_row(([1, 2], [0, 1]), ([1, 3], [0, 1])), P.pair_row(([1, 2, 4], [0, 1, 1]), ([1, 3], [0, 1]))]
    b = P.collate(rows, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 1, 3, 0], [1, 2, 4, 1, 3]]
    assert b["position_ids"].tolist() == [[0, 1, 0, 1, 0], [0, 1, 2, 0, 1]]
    assert b["real"].tolist() == [[True] * 4 + [False], [True] * 5]
    assert b["rejected"].tolist() == [[False, False, True, True, False], [False, False, False, True, True]]


def test_kl_pairs_each_prompt_with_the_previous_completion():
    rows = [P.unpaired_row([1, 10, 11], [0, 1, 1], True), P.unpaired_row([2, 20], [0, 1], False), P.unpaired_row([3, 3, 30], [0, 0, 1], True)]
    b = P.collate(rows, pad_id=0, unpaired=True)
    assert b["desirable"].tolist() == [True, False, True]
    kl = [[t for t, r in zip(ids, real) if r] for ids, real in zip(b["kl_input_ids"].tolist(), b["kl_real"].tolist())]
    assert kl == [[1, 30], [2, 10, 11], [3, 3, 20]]
    # a held-out micro-batch filled up: the counted rows pair among themselves, the fillers apart
    filled = P.collate([*rows[:2], {**rows[2], FILLER: True}, {**rows[0], FILLER: True}], pad_id=0, unpaired=True)
    kl = [[t for t, r in zip(ids, real) if r] for ids, real in zip(filled["kl_input_ids"].tolist(), filled["kl_real"].tolist())]
    assert kl == [[1, 20], [2, 10, 11], [3, 3, 10, 11], [1, 30]]
    assert filled["counted"].tolist() == [True, True, False, False] and P.row_count(filled) == 2
    assert "counted" not in b and P.row_count(b) == 3


def test_unknown_objective_is_refused():
    zeros = {k: torch.zeros(1) for k in ("chosen", "rejected", "chosen_tokens", "rejected_tokens")}
    with pytest.raises(ValueError, match="unknown objective"):
        P.objective_loss("ppo", {"beta": 0.1}, zeros, zeros)


def test_held_out_prompts_are_distinct_and_carry_their_completions():
    pairs = [
        P.pair_row(([1, 2, 7], [0, 0, 1]), ([1, 2, 8, 9], [0, 0, 1, 1])),
        P.pair_row(([1, 2, 5], [0, 0, 1]), ([1, 2, 6], [0, 0, 1])),  # the same prompt again: skipped
        P.pair_row(([3, 4], [0, 1]), ([3, 5, 5], [0, 1, 1])),
    ]
    wrapped = P.WithReference(pairs[2:])  # read through to its rows, before any reference is computed
    assert P.held_out_prompts([pairs[:2], wrapped], 5) == [
        ([1, 2], {"chosen": [7], "rejected": [8, 9]}),
        ([3], {"chosen": [4], "rejected": [5, 5]}),
    ]
    assert P.held_out_prompts([pairs], 1) == [([1, 2], {"chosen": [7], "rejected": [8, 9]})]
    kto = [P.unpaired_row([1, 10, 11], [0, 1, 1], True), P.unpaired_row([2, 2, 20], [0, 0, 1], False)]
    assert P.held_out_prompts([kto], 5) == [
        ([1], {"completion": [10, 11], "desirable": True}),
        ([2, 2], {"completion": [20], "desirable": False}),
    ]


@pytest.mark.parametrize("margins", [None, [0.5, -1.0, 2.0]], ids=["no-margin", "margins"])
@pytest.mark.parametrize("center", [None, 0.01], ids=["plain", "centred"])
@pytest.mark.parametrize("pairs", [PAIRS, CONVERSATION_PAIRS], ids=["strings", "conversations"])
def test_reward_model_equals_trl(tmp_path, tok, reward_model, pairs, center, margins):
    """The reward objective on TRL's RewardTrainer batch: the loss, the mean reward of each side, the accuracy, the
    margin and the gradient of every parameter (the score head's too); with a `margin` column, each pair's margin
    subtracted from its reward difference."""
    from trl import RewardConfig, RewardTrainer

    if margins is not None:
        pairs = [{**pair, "margin": margins[i % len(margins)]} for i, pair in enumerate(pairs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = RewardTrainer(
            model=copy.deepcopy(reward_model),
            args=_args(RewardConfig, tmp_path, max_length=None, per_device_train_batch_size=len(pairs), center_rewards_coefficient=center),
            train_dataset=_dataset(pairs),
            processing_class=tok,
        )
    batch, loss, metrics = _trl_step(trainer)
    assert ("margin" in batch) == (margins is not None)

    ours = copy.deepcopy(reward_model)
    ours.train()
    rows = _dpo_rows(batch)
    if margins is not None:  # the data stage's rows carry each pair's margin
        rows = [{**row, "margin": m} for row, m in zip(rows, batch["margin"].tolist(), strict=True)]
    ours_batch = P.collate_reward(rows, tok.pad_token_id)
    assert torch.equal(ours_batch["input_ids"], batch["input_ids"]) and torch.equal(ours_batch["attention_mask"], batch["attention_mask"])
    scores = P.reward_scores(ours, ours_batch)
    our_loss, stats = P.objective_loss("reward", {"center_rewards_coefficient": center or 0.0}, scores, None, margin=ours_batch.get("margin"))
    our_loss.backward()
    assert our_loss.item() == pytest.approx(loss.item(), abs=TOL)
    margins = stats["rewards_chosen"] - stats["rewards_rejected"]
    assert (margins > 0).float().mean().item() == pytest.approx(metrics["accuracy"], abs=TOL)
    assert margins.mean().item() == pytest.approx(metrics["margin"], abs=TOL)
    both = torch.cat([stats["rewards_chosen"], stats["rewards_rejected"]])
    assert both.mean().item() == pytest.approx(metrics["mean_reward"], abs=TOL)
    assert both.min().item() == pytest.approx(metrics["min_reward"], abs=TOL)
    assert ours.score.weight.grad is not None and ours.score.weight.grad.abs().sum() > 0
    _assert_same_gradients(trainer.model, ours)


def test_reward_collate_puts_each_side_in_a_row_padded_after_its_tokens():
    rows = [
        P.pair_row(([5, 6, 7], [0, 1, 1]), ([5, 6, 8, 9, 9], [0, 1, 1, 1, 1])),
        P.pair_row(([3, 4], [0, 1]), ([3, 2, 2], [0, 1, 1])),
    ]
    batch = P.collate_reward(rows, 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [3, 4, 0, 0, 0], [5, 6, 8, 9, 9], [3, 2, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert "counted" not in batch and P.row_count(batch) == 2
    wide = P.collate_reward(rows, 0, pad_to_multiple_of=8, seq_len=64)
    assert wide["input_ids"].shape == (4, 8) and torch.equal(wide["input_ids"][:, :5], batch["input_ids"])
    filled = P.collate_reward([rows[0], {**rows[1], FILLER: True}], 0)
    assert filled["counted"].tolist() == [True, False] and P.row_count(filled) == 1


def test_reward_scores_do_not_depend_on_padding(reward_model, tok):
    """The score head pools at the last token that is not padding: a side scores the same alone and beside a longer one."""
    rows = _random_rows(False, vocab=len(tok) - 1)
    with torch.no_grad():
        together = P.reward_scores(reward_model.eval(), P.collate_reward(rows, tok.pad_token_id))
        for i, row in enumerate(rows):
            alone = P.reward_scores(reward_model, P.collate_reward([row], tok.pad_token_id))
            assert alone["chosen"].item() == pytest.approx(together["chosen"][i].item(), abs=TOL)
            assert alone["rejected"].item() == pytest.approx(together["rejected"][i].item(), abs=TOL)


# --------------------------------------------------------------------------- the sides layout (sequence parallelism)


def _random_rows(unpaired: bool, n: int = 4, vocab: int = 40):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        sides = []
        for _ in range(1 if unpaired else 2):
            prompt, completion = (int(torch.randint(2, 6, (), generator=g)) for _ in range(2))
            ids = torch.randint(1, vocab, (prompt + completion,), generator=g).tolist()
            sides.append((ids, [0] * prompt + [1] * completion))
        rows.append(P.unpaired_row(*sides[0], i % 3 != 0) if unpaired else P.pair_row(*sides))
    return rows


SIDES = pytest.mark.parametrize(("unpaired", "kl"), [(False, True), (True, True), (True, False)], ids=["pairs", "kto", "apo_zero_unpaired"])


@SIDES
def test_sides_layout_scores_as_the_pair_rows(models, unpaired, kl):
    """Each side a row of its own, padded to pad_to: the sums and counts of the packed pair rows (KTO: and its KL
    pairs, which APO-zero unpaired has none of; pairs: and WPO's aligned sums)."""
    policy, _ = models
    rows = _random_rows(unpaired)
    packed = P.sequence_logps(policy, P.collate(rows, 0, unpaired=unpaired, kl=kl), wpo=not unpaired)
    sides = P.collate(rows, 0, unpaired=unpaired, kl=kl, pad_to=32)
    assert sides["input_ids"].shape == ((4 if unpaired else 8), 32) and P.row_count(sides) == 4
    assert ("kl_input_ids" in sides) == (unpaired and kl) and ("desirable" in sides) == unpaired
    split = P.sequence_logps(policy, sides, wpo=not unpaired)
    assert packed.keys() == split.keys() and ("chosen_wpo" in split) != unpaired and ("kl" in split) == (unpaired and kl)
    for key in packed:
        assert split[key].tolist() == pytest.approx(packed[key].tolist(), abs=TOL), key
    assert split["chosen_tokens"].sum() > 0 and (unpaired or split["rejected_tokens"].sum() > 0)


class _PerToken(torch.nn.Module):
    """A model whose logits at each position depend on that token alone: its slices score as the whole row."""

    def __init__(self, vocab: int = 40):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, vocab)

    def forward(self, input_ids, position_ids, use_cache):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.embed(input_ids))


@SIDES
def test_sides_cut_as_deepspeeds_adapter_cuts_them_sum_to_the_whole_rows(unpaired, kl):
    """DeepSpeed's adapter shifts the labels while a row is whole and cuts every tensor into sp_size slices; what
    else scores a token by its successor is shifted before the cut, so the slices' sums add up to the whole rows'."""
    model = _PerToken()
    batch = P.collate(_random_rows(unpaired), 0, unpaired=unpaired, kl=kl, pad_to=32)
    whole = P.sequence_logps(model, batch, wpo=not unpaired)
    cut = dict(batch, shift_labels=torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100))
    del cut["labels"]
    totals: dict = {}
    for r in range(4):  # sp_size 4: each slice 8 tokens, its last scoring the next slice's first
        part = {k: v[:, 8 * r : 8 * (r + 1)] if torch.is_tensor(v) else v for k, v in cut.items()}
        for key, value in P.sequence_logps(model, part, wpo=not unpaired).items():
            totals[key] = totals.get(key, 0) + value
    for key in whole:
        assert totals[key].tolist() == pytest.approx(whole[key].tolist(), abs=TOL), key


OPTIONS = {
    "dpo": {"beta": BETA, "label_smoothing": 0.1}, "ipo": {"beta": BETA}, "hinge": {"beta": BETA, "sft_weight": 0.5},
    "robust": {"beta": BETA, "label_smoothing": 0.2}, "bco_pair": {"beta": BETA}, "nca_pair": {"beta": BETA},
    "sppo_hard": {"beta": BETA}, "apo_zero": {"beta": BETA, "sft_weight": 0.5, "sft_average": "sequences"}, "apo_down": {"beta": BETA},
    "dpo_norm": {"beta": BETA, "divergence": "js_divergence"}, "exo_pair": {"beta": BETA, "label_smoothing": 1e-3},
    "aot": {"beta": BETA, "label_smoothing": 0.1}, "aot_unpaired": {"beta": BETA},
    "discopop": {"beta": BETA, "tau": 0.05, "divergence": "alpha_divergence", "divergence_alpha": 0.3},
    "simpo": {"beta": BETA, "gamma": 0.5}, "orpo": {"beta": BETA}, "kto": {"beta": BETA, "desirable_weight": 1.0, "undesirable_weight": 1.5},
    "apo_zero_unpaired": {"beta": BETA, "desirable_weight": 2.0, "undesirable_weight": 1.0},
    "reward": {"center_rewards_coefficient": 0.01},
}


@pytest.mark.parametrize("pad_to", [None, 32], ids=["rows", "sides"])
@pytest.mark.parametrize("objective", P.OBJECTIVES)
def test_filler_rows_count_for_nothing(models, reward_model, objective, pad_to):
    """A held-out micro-batch filled up with copies of a row marked as fillers (data.FilledUp): its loss and every
    statistic (KTO: the KL estimate too, whose pairs must not take a filler's completion) are those of its counted rows
    alone; a micro-batch of fillers alone has none."""
    reference, policy = models  # this way round KTO's KL estimate is positive, so it takes part
    unpaired = objective in P.UNPAIRED
    rows = _random_rows(unpaired, n=3)
    fillers = [{**rows[0], FILLER: True}] * 2
    if objective == "reward":  # a reward model's own layout: no sides layout (no sequence parallelism)
        if pad_to is not None:
            pytest.skip("a reward model has no sides layout")

        def scored(rows):
            batch = P.collate_reward(rows, reward_model.config.pad_token_id)
            with torch.no_grad():
                scores = P.reward_scores(reward_model.eval(), batch)
            return P.objective_loss(objective, OPTIONS[objective], scores, None, counted=batch.get("counted"))
    else:
        def scored(rows):
            return _scored(rows)

    def _scored(rows):
        batch = P.collate(rows, 0, unpaired=unpaired, kl=objective == "kto", pad_to=pad_to)
        with torch.no_grad():
            logps = P.sequence_logps(policy, batch)
            ref = None if objective in P.REFERENCE_FREE else P.sequence_logps(reference, batch)
            return P.objective_loss(objective, OPTIONS[objective], logps, ref, desirable=batch.get("desirable"), counted=batch.get("counted"))

    loss, stats = scored(rows)
    filled_loss, filled_stats = scored([rows[0], rows[1], *fillers, rows[2]])  # fillers anywhere, here in the middle
    alone, _ = scored([rows[2], *fillers])
    assert filled_loss.item() == pytest.approx(loss.item(), abs=TOL)
    assert filled_stats.keys() == stats.keys()
    for key in stats:
        assert filled_stats[key].tolist() == pytest.approx(stats[key].tolist(), abs=TOL), key
    assert alone.item() == pytest.approx(scored([rows[2]])[0].item(), abs=TOL)
    if objective == "kto":
        assert stats["kl"].item() > 0.01
    _, none = scored(fillers)
    assert all(none[k].numel() == 0 for k in none if k != "kl")


def test_a_side_longer_than_pad_to_is_refused():
    rows = [P.pair_row(([1, 2, 3, 4, 5], [0, 0, 1, 1, 1]), ([1, 2, 3], [0, 0, 1]))]
    with pytest.raises(ValueError, match="a side of 5 tokens is longer than the 4"):
        P.collate(rows, 0, pad_to=4)


@pytest.mark.parametrize("unpaired", [False, True], ids=["pairs", "kto"])
def test_collate_pads_to_a_multiple_and_scores_the_same(models, unpaired):
    """pad_to_multiple_of: the rows (and KTO's KL pairs) padded to the longest rounded up, never past seq_len, with
    the padding unreal and unsupervised, and every sequence log-probability and token count the same."""
    policy, _ = models
    rows = _random_rows(unpaired)
    plain = P.collate(rows, 0, unpaired=unpaired)
    scores = P.sequence_logps(policy, plain)
    widened = set()
    for multiple, seq_len in ((8, 64), (16, 64), (16, 12)):  # 12: rows past seq_len (pairs) stop at 24
        batch = P.collate(rows, 0, unpaired=unpaired, pad_to_multiple_of=multiple, seq_len=seq_len)
        for prefix in ("", "kl_") if unpaired else ("",):
            n = plain[prefix + "input_ids"].shape[1]
            width = batch[prefix + "input_ids"].shape[1]
            assert width == min(-(-n // multiple) * multiple, -(-n // seq_len) * seq_len), (prefix, multiple, seq_len)
            if width > n:
                widened.add(prefix)
            for key in ("input_ids", "position_ids", "supervised", "rejected", "real"):
                assert torch.equal(batch[prefix + key][:, :n], plain[prefix + key]), key
            assert not batch[prefix + "real"][:, n:].any() and not batch[prefix + "supervised"][:, n:].any()
        got = P.sequence_logps(policy, batch)
        for key in scores:
            assert got[key].tolist() == pytest.approx(scores[key].tolist(), abs=TOL), key
    assert widened == ({"", "kl_"} if unpaired else {""})
