"""Weight averaging during training: EMA and checkpoint merging (WSM).

Two kinds of running average of a model's weights, both built on torch's
:class:`torch.optim.swa_utils.AveragedModel`:

``"ema"``
    Exponential moving average, updated every ``every`` optimizer steps:
    ``avg = decay * avg + (1 - decay) * weights`` (``get_ema_multi_avg_fn``).
    The first update copies the weights. ``decay`` applies per update, so with
    ``every = k`` the weights of ``k`` optimizer steps are summarised by one
    decay; scale it for the batch size with :func:`ema_decay_for_batch` first.

``"merge"``
    WSM ("Warmup-Stable and Merge"): the equal-weight mean of the weights at
    the snapshot steps of a merge window, replacing the decay phase of a
    warmup-stable-decay schedule (AveragedModel's default average).

Snapshot steps (both kinds): ``step`` counts optimizer steps done, 1-based
(after the first optimizer update ``step == 1``). A step is averaged when
``first_step <= step <= last_step`` (``last_step`` None: no end) and
``step % every == 0`` -- every ``every``-th step of the run that falls inside
the window, like checkpoints saved every ``every`` steps. Choose
``first_step`` and ``last_step`` as multiples of ``every`` to include the
window's ends.

The average lives on ``device`` (CPU by default, keeping accelerator memory
free) in float32 whatever the training dtype. Buffers (rotary frequencies,
masks, batch-norm statistics) are not averaged: they are copied from the
training model at each snapshot, AveragedModel's ``use_buffers=False``
behaviour. LM buffers are constants, and averaging a float mask holding
``-inf`` would give NaN.

Typical use from a training script::

    avg = averaging.WeightAverage(accelerator.unwrap_model(model), "ema",
                                  decay=averaging.ema_decay_for_batch(0.999, batch, 256))
    accelerator.register_for_checkpointing(avg)    # saved/restored by save_state/load_state
    ...
    # after each optimizer step (when accelerator.sync_gradients):
    avg.update(accelerator.unwrap_model(model), step)
    ...
    avg.save_pretrained(accelerator.unwrap_model(model), output_dir / "model_ema",
                        is_main_process=accelerator.is_main_process)

Pass the unwrapped model (``accelerator.unwrap_model(model)``). A
DDP / DataParallel wrapper (``.module``) or a ``torch.compile`` wrapper
(``._orig_mod``) is unwrapped here too. Sharded parameters (FSDP,
DeepSpeed ZeRO-3) are not supported: each process would average only its
shard. Under data parallelism every process keeps its own (identical)
average, so CPU memory holds one float32 copy per process.

This module imports torch; the compiler never imports it.
"""

from __future__ import annotations

import copy
import inspect
import os

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

KINDS = ("ema", "merge")

_FORMAT = 1


def ema_decay_for_batch(decay: float, batch_size: int, reference_batch: int | None) -> float:
    """Scale an EMA decay tuned at one batch size to another.

    "How to Scale Your EMA" (Busbridge et al., 2023): when the batch grows by
    ``k = batch_size / reference_batch``, an EMA step sees ``k`` times as many
    samples, and the decay ``rho`` becomes ``rho ** k`` (``k < 1`` gives the
    ``k``-th root). The averaging horizon in samples stays the same.

    Args:
        decay: EMA decay tuned at ``reference_batch``, in (0, 1).
        batch_size: Batch size of this run (samples or tokens per optimizer
            step; the same unit as ``reference_batch``), positive.
        reference_batch: Batch size ``decay`` was tuned at, positive; None
            returns ``decay`` unchanged.

    Returns:
        The scaled decay, in (0, 1).

    Raises:
        ValueError: If ``decay`` is not in (0, 1) or a batch size is not a
            positive integer.
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
    _check_positive_int("batch_size", batch_size)
    if reference_batch is None:
        return float(decay)
    _check_positive_int("reference_batch", reference_batch)
    return float(decay) ** (batch_size / reference_batch)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP / DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _float32(t: torch.Tensor, device: torch.device, new: bool = False) -> torch.Tensor:
    """``t`` detached on ``device``, floating point cast to float32 (a new
    tensor with ``new``, else ``t`` itself where nothing changes)."""
    dtype = torch.float32 if t.is_floating_point() else t.dtype
    return t.detach().to(device=device, dtype=dtype, copy=new)


class _Snapshot:
    """What AveragedModel.update_parameters reads from the model: its
    parameters already moved to the average's device in float32 (torch's EMA
    uses ``_foreach_lerp_``, which refuses a bfloat16 ``end`` against a
    float32 average), and its buffers as they are (copied with ``copy_``)."""

    def __init__(self, params: list[torch.Tensor], buffers: list[torch.Tensor]):
        self._params = params
        self._buffers = buffers

    def parameters(self):
        return iter(self._params)

    def buffers(self):
        return iter(self._buffers)


class WeightAverage:
    """Running average of a model's weights, checkpointable with accelerate.

    kind ``"ema"``: updated every ``every`` optimizer steps with decay
    ``decay`` (already batch-scaled, see :func:`ema_decay_for_batch`).
    kind ``"merge"``: WSM -- an equal-weight average of the weights at every
    ``every``-th step inside ``[first_step, last_step]`` (the merge window, in
    optimizer steps, inclusive); steps outside the window are ignored. The
    window applies to ``"ema"`` too (default: the whole run). See the module
    docstring for the exact snapshot steps.

    Register it with ``accelerator.register_for_checkpointing(avg)``:
    :meth:`state_dict` is a plain dict (tensors, ints, floats, a string), and
    :meth:`load_state_dict` restores it bitwise.

    Args:
        model: The training model, unwrapped (``accelerator.unwrap_model``);
            copied, never modified. Built from its current weights.
        kind: ``"ema"`` or ``"merge"``.
        decay: EMA decay in (0, 1); required for ``"ema"``, must be None for
            ``"merge"``.
        every: Average every ``every``-th optimizer step (>= 1).
        first_step: First optimizer step of the window (>= 0).
        last_step: Last optimizer step of the window (inclusive), or None.
        device: Where the float32 average is kept.

    Raises:
        ValueError: On an unknown kind or invalid settings.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        kind: str,
        *,
        decay: float | None = None,
        every: int = 1,
        first_step: int = 0,
        last_step: int | None = None,
        device="cpu",
    ):
        if kind not in KINDS:
            raise ValueError(f"weight average kind must be one of {KINDS}, got {kind!r}")
        if kind == "ema":
            if decay is None:
                raise ValueError('kind "ema" needs a decay')
            if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
                raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
            decay = float(decay)
        elif decay is not None:
            raise ValueError(f'kind "merge" is an equal-weight average and takes no decay, got {decay!r}')
        _check_positive_int("every", every)
        if isinstance(first_step, bool) or not isinstance(first_step, int) or first_step < 0:
            raise ValueError(f"first_step must be a non-negative integer, got {first_step!r}")
        if last_step is not None and (
            isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < first_step
        ):
            raise ValueError(f"last_step must be None or an integer >= first_step ({first_step}), got {last_step!r}")

        self.kind = kind
        self.decay = decay
        self.every = every
        self.first_step = first_step
        self.last_step = last_step
        self.device = torch.device(device)
        self._last_averaged = -1  # optimizer step of the latest snapshot, -1: none yet

        model = _unwrap(model)
        self._param_names = [name for name, _ in model.named_parameters()]
        self._buffer_names = [name for name, _ in model.named_buffers()]
        # Copy the model straight onto `device` in float32: a plain deepcopy
        # would first duplicate every weight (and gradient) on the accelerator.
        # Tensors deepcopy finds in the memo are used as they are.
        memo: dict[int, object] = {}
        for p in model.parameters():
            memo[id(p)] = torch.nn.Parameter(_float32(p, self.device, new=True), requires_grad=False)
        for b in model.buffers():
            memo[id(b)] = _float32(b, self.device, new=True)
        start = copy.deepcopy(model, memo)
        del memo
        multi_avg_fn = get_ema_multi_avg_fn(decay) if kind == "ema" else None  # None: equal weights
        # AveragedModel deepcopies `start` again, on `device` (CPU memory only).
        self._avg = AveragedModel(start, device=self.device, multi_avg_fn=multi_avg_fn, use_buffers=False)
        del start
        self._avg.eval()

    # -- averaging ---------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether :meth:`update` averages at optimizer step ``step``."""
        if step < self.first_step or (self.last_step is not None and step > self.last_step):
            return False
        return step % self.every == 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> bool:
        """Average the model's current weights in if ``step`` is a snapshot step.

        Call after every optimizer step with the number of optimizer steps
        done (1-based). Cheap when ``step`` is not a snapshot step.

        Args:
            model: The training model (unwrapped, or a DDP wrapper).
            step: Optimizer steps done so far.

        Returns:
            Whether the weights were averaged in.

        Raises:
            ValueError: If ``step`` is not a positive integer, or not after the
                previous snapshot (the same step averaged twice), or the model
                does not match the one the average was built from.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step must be a positive integer (optimizer steps done), got {step!r}")
        if not self.due(step):
            return False
        if step <= self._last_averaged:
            raise ValueError(f"step {step} is not after the last averaged step {self._last_averaged}")
        model = _unwrap(model)
        params = list(model.parameters())
        buffers = list(model.buffers())
        if len(params) != len(self._param_names) or len(buffers) != len(self._buffer_names):
            raise ValueError("the model does not match the one the weight average was built from")
        snapshot = _Snapshot([_float32(p, self.device) for p in params], buffers)
        self._avg.update_parameters(snapshot)
        self._last_averaged = step
        return True

    @property
    def count(self) -> int:
        """Snapshots averaged so far."""
        return int(self._avg.n_averaged.item())

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model itself (float32, on ``device``), e.g. to evaluate it.

        Do not train it; :meth:`update` overwrites its weights.
        """
        return self._avg.module

    # -- checkpointing -----------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume bitwise.

        The tensors under ``"weights"`` are the live averaged tensors (like
        :meth:`torch.nn.Module.state_dict`), not copies: save or clone them
        before the next :meth:`update`.

        Returns:
            ``{"format", "kind", "decay", "every", "first_step", "last_step",
            "count", "last_averaged_step", "weights"}``; ``weights`` is the
            averaged model's state dict (parameters and persistent buffers).
        """
        return {
            "format": _FORMAT,
            "kind": self.kind,
            "decay": self.decay,
            "every": self.every,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "count": self.count,
            "last_averaged_step": self._last_averaged,
            "weights": self._avg.module.state_dict(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, e.g. from ``accelerator.load_state``.

        Raises:
            ValueError: If the state was saved with other averaging settings
                (kind, decay, interval or window) or another format.
            RuntimeError: If its weights do not fit the model (from
                :meth:`torch.nn.Module.load_state_dict`).
        """
        if state.get("format") != _FORMAT:
            raise ValueError(f"unknown weight-average state format {state.get('format')!r}")
        mine = {
            "kind": self.kind,
            "decay": self.decay,
            "every": self.every,
            "first_step": self.first_step,
            "last_step": self.last_step,
        }
        theirs = {key: state.get(key) for key in mine}
        if theirs != mine:
            raise ValueError(f"weight-average state was saved with {theirs}, this run uses {mine}")
        count = state["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"weight-average state has an invalid count {count!r}")
        self._avg.module.load_state_dict(state["weights"], strict=True)
        self._avg.n_averaged.fill_(count)
        self._last_averaged = int(state["last_averaged_step"])

    # -- export ------------------------------------------------------------

    @torch.no_grad()
    def save_pretrained(self, model: torch.nn.Module, directory, **kwargs) -> None:
        """Write the averaged weights as a normal Hugging Face model directory.

        Makes a copy of ``model`` (the unwrapped training model: its current
        config and generation config are what get saved) whose parameters and
        buffers are the average's tensors (float32; shared, not copied), and
        calls its ``save_pretrained(directory, safe_serialization=True,
        **kwargs)`` (safetensors; transformers 5 always writes them and takes
        no such argument, so it is passed only where accepted). The training
        model is not modified.

        Args:
            model: The training model, unwrapped (``accelerator.unwrap_model``).
            directory: Output directory.
            **kwargs: Passed on, e.g. ``is_main_process=accelerator.is_main_process``.

        Raises:
            RuntimeError: If nothing has been averaged yet.
            TypeError: If ``kwargs`` has ``state_dict`` (it would replace the average).
            ValueError: If ``model`` does not match the averaged one.
        """
        if self.count == 0:
            raise RuntimeError(
                f"no weights averaged yet (kind {self.kind!r}, every {self.every}, "
                f"window [{self.first_step}, {self.last_step}]); nothing to save"
            )
        if "state_dict" in kwargs:
            raise TypeError("save_pretrained of a weight average takes no state_dict: it saves the average")
        model = _unwrap(model)
        averaged = self._avg.module
        avg_params = dict(averaged.named_parameters())
        avg_buffers = dict(averaged.named_buffers())
        memo: dict[int, object] = {}
        for name, p in model.named_parameters():
            if name not in avg_params:
                raise ValueError(f"parameter {name!r} of the model is not in the weight average")
            memo[id(p)] = torch.nn.Parameter(avg_params[name].detach(), requires_grad=False)
        for name, b in model.named_buffers():
            if name not in avg_buffers:
                raise ValueError(f"buffer {name!r} of the model is not in the weight average")
            memo[id(b)] = avg_buffers[name].detach()
        if len(memo) != len(avg_params) + len(avg_buffers):
            raise ValueError("the model does not match the one the weight average was built from")
        out = copy.deepcopy(model, memo)
        del memo
        if "safe_serialization" in inspect.signature(out.save_pretrained).parameters:
            kwargs.setdefault("safe_serialization", True)
        out.save_pretrained(os.fspath(directory), **kwargs)
