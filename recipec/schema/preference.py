"""`[preference]`: preference training (DPO and its relatives, and reward models) on preference data.

One model per objective, chosen by `objective`, so each objective's own options are
validated and an option of another objective is an unknown key. The defaults are TRL's
(SimPO's are the SimPO paper's), so a recipe ported from TRL means the same run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Table, key_error


class _Objective(Table):
    beta: float = Field(0.1, gt=0)
    """How far the model may move from the reference (DPO's beta; IPO's tau; ORPO's weight of the odds-ratio term)."""


class _Referenced(_Objective):
    reference: Literal["live", "precomputed"] = "live"
    """The reference model's log-probabilities: `live` computes them at every step (under `[peft]` from the base model with the adapter disabled, no second copy; otherwise from a frozen copy of the starting model, counted by the memory estimate); `precomputed` computes them once before the first step, from the model as it starts, and keeps them in the data stage's cache entry, keyed by the model's weights (no copy, no second forward pass per step)."""


class _SftTerm(Table):
    sft_weight: float = Field(0.0, ge=0)
    """Weight of a supervised term added to the loss: the negative log-likelihood of the chosen completions (RPO; TRL's `loss_type = [<objective>, "sft"]` with `loss_weights = [1, sft_weight]`, with SimPO TRL's `cpo_alpha` (CPO-SimPO), LLaMA-Factory's `pref_ftx`), which keeps DPO from lowering the chosen answers' likelihood along with the rejected ones'. 0: off."""

    sft_average: Literal["tokens", "sequences"] = "tokens"
    """How the supervised term averages the chosen completions' log-probabilities: `tokens`, over every chosen completion token of the micro-batch (TRL's `sft` loss); `sequences`, over each completion's tokens, then over the pairs (LLaMA-Factory's `pref_ftx`)."""

    @model_validator(mode="after")
    def _sft_average_needs_a_weight(self) -> "_SftTerm":
        if self.sft_average != "tokens" and self.sft_weight == 0:  # (the resolved recipe writes the default with no term)
            raise key_error("sft_average", "sft_average says how the supervised term is averaged, and sft_weight is 0 (no supervised term)", "set sft_weight, e.g. 0.5, or remove sft_average")
        return self


class _PairedWithSft(_Referenced, _SftTerm):
    ld_alpha: float | None = Field(None, ge=0, le=1)
    """LD-DPO (Liu et al. 2024; TRL's and LLaMA-Factory's `ld_alpha`): each side's log-probability, the policy's and the reference's, is the sum over its first min(chosen, rejected) completion tokens plus ld_alpha times the sum over the rest, so the longer answer's extra tokens weigh less (1: plain sums; 0: the shared length only). Unset: off."""

    reference_sync_every: int | None = Field(None, ge=1)
    """TR-DPO (Gorbatovski et al. 2024; TRL's `sync_ref_model` with `ref_model_sync_steps`): every this many optimizer steps the live reference moves toward the policy, reference = alpha * policy + (1 - alpha) * reference (alpha: `reference_sync_alpha`), and every checkpoint keeps the reference, so a resumed run goes on from it. A live reference that is a frozen copy of its own (full fine-tuning; under FSDP or ZeRO-3 sharded as the policy is, and synced shard by shard or gathered a parameter at a time). Unset: the reference stays the starting model."""

    reference_sync_alpha: float = Field(0.6, gt=0, le=1)
    """TR-DPO's alpha (TRL's `ref_model_mixup_alpha`): the policy's share of the synced reference (1: the reference becomes the policy)."""

    @model_validator(mode="after")
    def _sync_alpha_needs_a_period(self) -> "_PairedWithSft":
        # (the resolved recipe writes the default alpha with no sync)
        if self.reference_sync_alpha != type(self).model_fields["reference_sync_alpha"].default and self.reference_sync_every is None:
            raise key_error("reference_sync_alpha", "reference_sync_alpha is the policy's share of the reference at each TR-DPO sync, and reference_sync_every is unset (no sync)", "set reference_sync_every, e.g. 512, or remove reference_sync_alpha")
        return self


EXTRA_LOSSES = ("dpo", "ipo", "hinge", "dpo_norm", "bco_pair", "nca_pair", "sppo_hard", "apo_zero", "apo_down")
"""The objectives `extra_losses` may add: those that take no option of their own but `beta` (DPO's without label smoothing)."""

F_DIVERGENCE_LOSSES = ("dpo", "ipo", "hinge", "dpo_norm", "robust", "exo_pair", "discopop")
"""The objectives built on the difference of the two sides' scores, which `divergence` changes (TRL's list)."""


class _Weighted(_PairedWithSft):
    wpo: bool = False
    """WPO (Zhou et al. 2024; TRL's `use_weighting`, axolotl's `dpo_use_weighting`): each pair's loss (and its supervised term) is weighted by the policy's probability of both its sides, each the exponential of the mean over its completion tokens of log p(token) - log sum_v p(v)^2, without gradient, which makes off-policy pairs count as if sampled from the policy."""

    objective_weight: float = Field(1.0, ge=0)
    """The weight of the objective's own loss in the sum with `extra_losses` (TRL's first `loss_weights` entry)."""

    extra_losses: dict[Literal["dpo", "ipo", "hinge", "dpo_norm", "bco_pair", "nca_pair", "sppo_hard", "apo_zero", "apo_down"], float] = Field(default_factory=dict)
    """Other objectives' losses added to this one's, each times its weight, on the same log-ratios with the same beta (TRL's `loss_type` list with `loss_weights`; `dpo` here without label smoothing). MPO (mixed preference optimisation) is objective = "dpo", objective_weight = 0.8, extra_losses = {bco_pair = 0.2}, sft_weight = 1."""

    @model_validator(mode="after")
    def _extra_losses_are_others(self) -> "_Weighted":
        objective = getattr(self, "objective", None)
        for name, weight in self.extra_losses.items():
            if weight < 0:
                raise key_error(("extra_losses", name), f"the weight of extra loss {name!r} is {weight}, below 0", "set a weight of 0 or more")
            if name == objective:
                raise key_error(("extra_losses", name), f"{name!r} is the objective itself", "set objective_weight instead")
            if getattr(self, "divergence", "reverse_kl") != "reverse_kl" and name not in F_DIVERGENCE_LOSSES:
                raise key_error(("extra_losses", name), f"divergence {self.divergence!r} changes the losses built on the difference of the two sides' scores ({', '.join(F_DIVERGENCE_LOSSES)}), and {name!r} is not one", f"remove {name}, or the divergence")
        return self


class _Divergence(Table):
    divergence: Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"] = "reverse_kl"
    """The f-divergence that holds the model to the reference (f-DPO, Wang et al. 2023; TRL's `f_divergence_type`): each side's log-ratio u = log(pi / pi_ref) enters the loss as f'(exp u): `reverse_kl` u itself (DPO's own), `forward_kl` 1 - exp(-u), `js_divergence` log 2 + log sigmoid(u), `alpha_divergence` (exp((alpha - 1) u) - 1) / (alpha - 1)."""

    divergence_alpha: float = Field(0.5, gt=0)
    """alpha of `divergence = "alpha_divergence"` (TRL's `f_alpha_divergence_coef`; 1 is the reverse KL)."""

    @model_validator(mode="after")
    def _alpha_needs_the_alpha_divergence(self) -> "_Divergence":
        if self.divergence != "alpha_divergence" and self.divergence_alpha != 0.5:  # (the resolved recipe writes the default)
            raise key_error("divergence_alpha", f'divergence_alpha is the alpha of divergence = "alpha_divergence", and divergence is {self.divergence!r}', 'set divergence = "alpha_divergence", or remove divergence_alpha')
        return self


class DpoTable(_Weighted, _Divergence):
    """`[preference] objective = "dpo"`: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""

    objective: Literal["dpo"]
    """The objective."""

    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Conservative DPO: the share of pairs assumed to be mislabelled (0: plain DPO)."""


class IpoTable(_Weighted, _Divergence):
    """`[preference] objective = "ipo"`: (delta - 1 / (2 beta))^2 over the log-ratios averaged per completion token."""

    objective: Literal["ipo"]
    """The objective."""


class HingeTable(_Weighted, _Divergence):
    """`[preference] objective = "hinge"`: relu(1 - beta * (chosen log-ratio - rejected log-ratio)) (SLiC)."""

    objective: Literal["hinge"]
    """The objective."""


class RobustTable(_Weighted, _Divergence):
    """`[preference] objective = "robust"`: robust DPO (rDPO, Chowdhury et al. 2024): DPO's loss unbiased for pairs whose labels flip with probability `label_smoothing`, (-(1 - eps) log sigmoid(beta delta) + eps log sigmoid(-beta delta)) / (1 - 2 eps) (TRL's loss_type "robust")."""

    objective: Literal["robust"]
    """The objective."""

    label_smoothing: float = Field(gt=0, lt=0.5)
    """The share of pairs whose preference is assumed flipped (eps)."""


class BcoPairTable(_Weighted):
    """`[preference] objective = "bco_pair"`: binary classifier optimisation on pairs, -log sigmoid(beta * chosen log-ratio) - log sigmoid(-beta * rejected log-ratio) (TRL's loss_type "bco_pair")."""

    objective: Literal["bco_pair"]
    """The objective."""


class NcaPairTable(_Weighted):
    """`[preference] objective = "nca_pair"`: noise contrastive alignment (Chen et al. 2024), -log sigmoid(r_c) - (log sigmoid(-r_c) + log sigmoid(-r_r)) / 2 with r = beta * log-ratio (TRL's loss_type "nca_pair")."""

    objective: Literal["nca_pair"]
    """The objective."""


class SppoHardTable(_Weighted):
    """`[preference] objective = "sppo_hard"`: self-play preference optimisation with hard labels (Wu et al. 2024), (chosen log-ratio - 1 / (2 beta))^2 + (rejected log-ratio + 1 / (2 beta))^2 (TRL's loss_type "sppo_hard")."""

    objective: Literal["sppo_hard"]
    """The objective."""


class ApoZeroTable(_Weighted):
    """`[preference] objective = "apo_zero"`: anchored preference optimisation (D'Oosterlinck et al. 2024) when the chosen answers are better than the model's own: 1 - sigmoid(beta * chosen log-ratio) + sigmoid(beta * rejected log-ratio), raising the one and lowering the other (TRL's loss_type "apo_zero")."""

    objective: Literal["apo_zero"]
    """The objective."""


class ApoDownTable(_Weighted):
    """`[preference] objective = "apo_down"`: anchored preference optimisation when the chosen answers are worse than the model's own: sigmoid(beta * chosen log-ratio) + 1 - sigmoid(beta * (chosen log-ratio - rejected log-ratio)), lowering both, the rejected more (TRL's loss_type "apo_down")."""

    objective: Literal["apo_down"]
    """The objective."""


class DpoNormTable(_Weighted, _Divergence):
    """`[preference] objective = "dpo_norm"`: DPO over the log-ratios averaged per completion token, -log sigmoid(beta * (chosen log-ratio / chosen tokens - rejected log-ratio / rejected tokens)), so a pair's longer side does not weigh more (TRL's loss_type "sigmoid_norm")."""

    objective: Literal["dpo_norm"]
    """The objective."""


class ExoPairTable(_Weighted, _Divergence):
    """`[preference] objective = "exo_pair"`: efficient exact optimisation (EXO, Ji et al. 2024) on pairs: the reverse KL from the pair's preference, smoothed by eps, to the model's, q log(q / (1 - eps)) + (1 - q) log((1 - q) / eps) with q = sigmoid(beta * delta) (TRL's loss_type "exo_pair")."""

    objective: Literal["exo_pair"]
    """The objective."""

    label_smoothing: float = Field(gt=0, lt=0.5)
    """eps, the share of the preference given to the rejected answer (the EXO paper uses 1e-3)."""


class AotTable(_PairedWithSft):
    """`[preference] objective = "aot"`: alignment via optimal transport (AOT, Melnyk et al. 2024), paired: DPO's loss on the micro-batch's sorted policy log-odds (chosen less rejected log-probability) less its sorted reference log-odds, which asks the first distribution to dominate the second; the sort is over a micro-batch, so `train.micro_batch_size` changes the loss (1 makes it DPO with this `label_smoothing`) (TRL's loss_type "aot")."""

    objective: Literal["aot"]
    """The objective."""

    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """The share of pairs assumed to be mislabelled, as conservative DPO takes it (0: none)."""


class AotUnpairedTable(_PairedWithSft):
    """`[preference] objective = "aot_unpaired"`: AOT without the pairing: DPO's loss on the micro-batch's sorted chosen log-ratios less its sorted rejected log-ratios; the sort is over a micro-batch, so `train.micro_batch_size` changes the loss (TRL's loss_type "aot_unpaired")."""

    objective: Literal["aot_unpaired"]
    """The objective."""

    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """The share of pairs assumed to be mislabelled, as conservative DPO takes it (0: none)."""


class DiscopopTable(_Weighted, _Divergence):
    """`[preference] objective = "discopop"`: DiscoPOP (Chan Lu et al. 2024), the log-ratio-modulated loss: with z = beta * delta and m = sigmoid(z / tau), (1 - m) (-log sigmoid(z)) + m exp(-z) (TRL's loss_type "discopop")."""

    objective: Literal["discopop"]
    """The objective."""

    tau: float = Field(0.05, gt=0)
    """The temperature of the blend between the logistic and the exponential loss (TRL's `discopop_tau`; the paper's 0.05)."""


class SimpoTable(_SftTerm):
    """`[preference] objective = "simpo"`: reference-free, -log sigmoid(beta * (mean chosen log-prob - mean rejected log-prob) - gamma)."""

    objective: Literal["simpo"]
    """The objective."""

    beta: float = Field(2.0, gt=0)
    """Scale of the length-normalised reward (the SimPO paper uses 2 to 2.5)."""

    gamma: float = Field(0.5, ge=0)
    """The target reward margin."""


class OrpoTable(_Objective):
    """`[preference] objective = "orpo"`: reference-free, the chosen side's cross-entropy minus beta * log sigmoid(log odds ratio)."""

    objective: Literal["orpo"]
    """The objective."""


class _Unpaired(_Referenced):
    desirable_weight: float = Field(1.0, gt=0)
    """Weight of the desirable completions' loss."""

    undesirable_weight: float = Field(1.0, gt=0)
    """Weight of the undesirable completions' loss (raise it when undesirable examples are fewer)."""


class KtoTable(_Unpaired):
    """`[preference] objective = "kto"`: unpaired desirable and undesirable completions (records = "unpaired_preference"), 1 - sigmoid(beta (log-ratio - KL)) for a desirable one, 1 - sigmoid(beta (KL - log-ratio)) for an undesirable one, KL estimated from each prompt paired with another example's completion in the micro-batch."""

    objective: Literal["kto"]
    """The objective."""


class ApoZeroUnpairedTable(_Unpaired):
    """`[preference] objective = "apo_zero_unpaired"`: APO-zero on unpaired examples (records = "unpaired_preference"; TRL's KTO `loss_type = "apo_zero_unpaired"`), 1 - sigmoid(beta log-ratio) for a desirable completion, sigmoid(beta log-ratio) for an undesirable one: KTO without its KL estimate, for when the desirable completions are better than what the model writes."""

    objective: Literal["apo_zero_unpaired"]
    """The objective."""


class RewardTable(Table):
    """`[preference] objective = "reward"`: a reward model (Bradley-Terry): -log sigmoid(r(chosen) - r(rejected)), r the model's score of the whole conversation."""

    objective: Literal["reward"]
    """The objective."""

    center_rewards_coefficient: float = Field(0.0, ge=0)
    """Weight of the mean squared sum of each pair's two rewards, which keeps the rewards centred on zero (0: off; the reward-model paper of Eisenstein et al. uses 0.01)."""


OBJECTIVE_TABLES = (
    DpoTable, IpoTable, HingeTable, RobustTable, BcoPairTable, NcaPairTable, SppoHardTable, ApoZeroTable, ApoDownTable,
    DpoNormTable, ExoPairTable, AotTable, AotUnpairedTable, DiscopopTable, SimpoTable, OrpoTable, KtoTable, ApoZeroUnpairedTable,
    RewardTable,
)

PreferenceTable = Annotated[
    DpoTable | IpoTable | HingeTable | RobustTable | BcoPairTable | NcaPairTable | SppoHardTable | ApoZeroTable | ApoDownTable
    | DpoNormTable | ExoPairTable | AotTable | AotUnpairedTable | DiscopopTable | SimpoTable | OrpoTable | KtoTable
    | ApoZeroUnpairedTable | RewardTable,
    Field(discriminator="objective"),
]
