"""`[train]`: batch, length and the cadence of logging, evaluation and checkpoints."""

from __future__ import annotations

import re
from fractions import Fraction

from pydantic import Field, field_validator, model_validator

from .base import Table, key_error

LENGTH_KEYS = ("max_steps", "tokens", "epochs")

MAX_STEPS = 10_000_000
"""The most optimizer steps a run may have: a build writes the LR of every step to schedule.csv."""

EPOCHS_CADENCE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?|[0-9]+/[0-9]+) epochs?")
"""A cadence in passes over the training split: "1 epoch", "0.25 epoch", "1/3 epoch", "2 epochs"."""


def cadence_epochs(value: int | str) -> Fraction | None:
    """The epochs of an `eval_every` or `save_every` given as a string ("1/4 epoch": 1/4); None for steps."""
    if isinstance(value, int):
        return None
    match = EPOCHS_CADENCE.fullmatch(value)
    if match is None:
        return None
    try:
        return Fraction(match["n"])
    except ZeroDivisionError:
        return None


class TrainTable(Table):
    """`[train]`. Give the run's length as exactly one of `max_steps`, `tokens` and `epochs`."""

    micro_batch_size: int = Field(8, ge=1)
    """Sequences per process per forward pass."""

    batch_size: int = Field(32, ge=1)
    """Global batch: sequences per optimizer step over all processes. Gradient accumulation is derived: batch_size / (micro_batch_size * launch.num_processes)."""

    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    """Length of the run in optimizer steps (at most 10,000,000)."""

    tokens: int | None = Field(None, ge=1)
    """Length of the run in training tokens (batch_size * seq_len per step, rounded up to whole steps)."""

    epochs: int | float | None = Field(None, gt=0)
    """Length of the run in passes over the training split. Steps per epoch depend on the data, so the generated script derives max_steps after tokenizing."""

    log_every: int = Field(10, ge=1)
    """Write a line to metrics.jsonl every this many optimizer steps."""

    eval_every: int | str = 100
    """Evaluate on the held-out split every this many steps and at the end; 0: only at the end. With `eval_at_start`, before the first step too. Or a string in epochs (passes over the training split): "1 epoch" evaluates at the end of each epoch, "0.25 epoch" or "1/4 epoch" four times an epoch; the script derives the steps once the data is loaded, as ceil(epochs * steps_per_epoch), steps_per_epoch = training rows // batch_size."""

    eval_at_start: bool = True
    """Evaluate on the held-out split before the first step, as step 0: the first eval line in metrics.jsonl is then the baseline, the model as it starts. A resumed run never evaluates step 0 again. false: the first evaluation is at step `eval_every` (or at the end)."""

    eval_batches: int = Field(50, ge=0)
    """Micro-batches (of `eval_micro_batch_size` rows) per evaluation; 0: the whole held-out split."""

    eval_micro_batch_size: int | None = Field(None, ge=1)
    """Sequences (preference pairs, KTO examples) per process per forward pass in evaluation; unset: `micro_batch_size`. An evaluation forward keeps no activations for a backward pass, so it can often take more rows; the held-out losses do not depend on it (each is the mean over the tokens the loss sees). `eval_batches` counts micro-batches of this size. An evaluation micro-batch holds its own logits (rows x seq_len x vocab: 8 bytes a logit in float32, the logits and the cross-entropy's log-probabilities; 10 with 16-bit activations, which add a float32 copy) beside the weights and the optimizer state: `recipec explain` estimates that peak beside the training step's, and `launch.device_memory_gib` warns about it too (not with `loss.cross_entropy = "chunked"`, whose evaluation forward peaks inside a layer: not estimated)."""

    eval_generations: int = Field(0, ge=0, le=1000)
    """Examples and preference pairs only: at each evaluation, greedy generations from this many held-out prompts (each held-out example cut before its first supervised token; with [preference], each distinct prompt of the held-out pairs once), appended to `generations.jsonl` in the run directory with the step and whether each ended with an end-of-turn token (with [preference], also the row's chosen and rejected completions; KTO: its completion and label). On a sharded model (ZeRO-3, FSDP version 2, tensor parallelism) every process generates, in step. 0: none."""

    max_new_tokens: int = Field(64, ge=1)
    """The most tokens each of the `eval_generations` may generate."""

    neftune_noise_alpha: float | None = Field(None, gt=0)
    """NEFTune: in training, add uniform noise in [-m, m], m = alpha / sqrt(seq_len * hidden_size), to the input embeddings (transformers' hook, as the Trainer's `neftune_noise_alpha`); evaluation sees none. The paper uses 5 to 15. Unset: no noise. Not with [preference]."""

    save_every: int | str = 500
    """Save a resumable checkpoint every this many steps; 0: none (the final model is always saved). Or a string in epochs, as `eval_every`: "1 epoch" saves at the end of each epoch (but the last, whose final model is saved anyway)."""

    keep_last: int = Field(2, ge=0)
    """Keep only the newest this many checkpoints; 0 keeps all. A new checkpoint is written before the oldest is deleted, so a run holds one more while it saves: the script checks before its first step that the output directory has room for them and the saved models."""

    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop the run once `best_metric` (the held-out loss, `eval_loss`, by default) has not improved on its best by more than `early_stopping_threshold` for this many evaluations in a row (transformers' `EarlyStoppingCallback`; axolotl's `early_stopping_patience`, LLaMA-Factory's `early_stopping_steps`). Every evaluation counts, the one before the first step (`eval_at_start`) included. The run then ends as at its last step: the final model is saved at that step (not evaluated again), and run.json says where it stopped and the best value's step. The LR schedule is not changed. Checkpoints keep the count, so a resumed run stops where the uninterrupted one would. Unset: the run goes to its last step."""

    early_stopping_threshold: float = Field(0.0, ge=0)
    """How much better than its best so far `best_metric` must be to count as an improvement for `early_stopping_patience` (transformers' `early_stopping_threshold`)."""

    best_metric: str = Field("eval_loss", pattern=r"^eval_[A-Za-z0-9_.-]+$")
    """The evaluation's metric that `early_stopping_patience` and `output.save_best` watch (transformers' `metric_for_best_model`): `eval_loss` (the default), `eval_loss_<name>` of a `split = "eval"` source, `eval_loss_parent` ([continual] with `eval_parent`), or under [preference] a statistic of the held-out pairs: `eval_reward_accuracy`, `eval_reward_margin`, `eval_rewards_chosen`, `eval_rewards_rejected`, `eval_logps_chosen`, `eval_logps_rejected` (not for a reward model), `eval_kl` (KTO), `eval_sft_nll` (with `sft_weight`), and each of a source (`eval_<name>_reward_accuracy`). Checked against what the run evaluates."""

    greater_is_better: bool | None = None
    """Whether a higher `best_metric` is better (transformers' `greater_is_better`). Unset: lower is better for a name ending in `loss`, higher for any other (a reward accuracy or margin)."""

    @field_validator("eval_every", "save_every")
    @classmethod
    def check_cadence(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must be 0 (never) or a number of steps")
            return value
        epochs = cadence_epochs(value)
        if epochs is None:
            raise ValueError('must be a number of steps, or of epochs as a string: e.g. 500, "1 epoch", "0.25 epoch" or "1/3 epoch"')
        if epochs == 0:
            raise ValueError("must be more than 0 epochs (0, the number, turns it off)")
        return value

    @model_validator(mode="after")
    def check_early_stopping(self) -> TrainTable:
        if self.early_stopping_threshold != type(self).model_fields["early_stopping_threshold"].default and self.early_stopping_patience is None:
            raise key_error(
                "early_stopping_threshold",
                "early_stopping_threshold is the improvement early stopping asks for, and early_stopping_patience is unset (no early stopping)",
                "set early_stopping_patience, e.g. 3, or remove early_stopping_threshold",
            )
        return self

    @model_validator(mode="after")
    def check_one_length(self) -> TrainTable:
        given = [k for k in LENGTH_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            raise key_error(
                given[1] if len(given) > 1 else "max_steps",
                "give the run's length as exactly one of `max_steps`, `tokens` and `epochs`"
                + (f", got {' and '.join(given)}" if given else ""),
                "e.g. max_steps = 1000",
            )
        return self
