"""The optimizers a recipe can name, built from well-kept implementations.

``build(model, spec)`` returns one ``torch.optim.Optimizer`` for the trainable parameters of
``model``; ``spec`` is the recipe's ``[optim]`` table as the plan holds it (``name``, ``lr``,
``weight_decay``, ``decay``, ``groups`` and the optimizer's own options; ``grad_clip`` and
``scaling`` are read elsewhere). The parameter groups come from :func:`param_groups`: by
default weight decay on the parameters with two or more dimensions (matrices and embeddings)
and never on the one-dimensional ones (biases, norm weights); ``decay`` and ``groups``
(``[[optim.groups]]``) change which are decayed and give named sets their own LR multiplier.

* ``adamw``: ``torch.optim.AdamW`` (``implementation``: foreach, fused or for-loop).
* ``muon``: ``torch.optim.Muon`` on the 2-D matrices of the hidden layers, and
  ``torch.optim.AdamW`` (its own LR, betas and eps) on the embeddings, the output layer, the
  norms and the biases, stepped together as one optimizer (:class:`MuonWithAdamW`); the
  schedule scales both LRs.
* ``adafactor``: ``torch.optim.Adafactor``.
* ``lion``: ``lion_pytorch.Lion``.
* ``sgd``: ``torch.optim.SGD`` with momentum and Nesterov.
* ``schedule_free_adamw``: ``schedulefree.AdamWScheduleFree``; its ``train()``/``eval()``
  switch the parameters between the point it steps and the average it evaluates.
* ``adamw_8bit``, ``paged_adamw_8bit``: ``bitsandbytes.optim.AdamW8bit`` and
  ``PagedAdamW8bit`` (a CUDA GPU).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable

import torch

from .param_patterns import NAMED, layer_pattern

MODULES = {"lion": "lion_pytorch", "schedule_free_adamw": "schedulefree", "adamw_8bit": "bitsandbytes", "paged_adamw_8bit": "bitsandbytes"}
"""The module each optimizer outside torch imports."""


def missing_module(name: str) -> str | None:
    """The module an optimizer needs and this environment lacks, or None."""
    import importlib.util

    module = MODULES.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        return module
    return None


def ndim(param: Any) -> int:
    """A parameter's number of dimensions; one that ZeRO-3 partitioned at creation is empty, its own shape in ``ds_shape``."""
    return len(getattr(param, "ds_shape", param.shape))


def is_hidden_matrix(name: str, param: Any) -> bool:
    """Muon's side: a 2-D weight of a hidden layer (not an embedding or the output layer)."""
    lowered = name.lower()
    return ndim(param) == 2 and not any(part in lowered for part in ("embed", "lm_head", "wte", "wpe", "output"))


class ParamSets(dict):
    """``id`` of the parameters of each named set (the keys), and ``layers``: per decoder layer, in
    the order the model runs them, its parameters' ``id`` -> name within the layer."""

    layers: list[dict[int, str]]


def named_sets(model: Any) -> ParamSets:
    """The named sets of ``model``: embeddings (every ``nn.Embedding``), output (the output layer,
    lm_head or a sequence classifier's score head, unless tied to the input embedding), norms
    (modules whose class name holds "norm": LayerNorm, RMSNorm and the models' own), biases
    (parameters named ``bias``); and its decoder layers (the modules whose class, or a base of it,
    is one of its ``_no_split_modules``, outermost first)."""
    sets = ParamSets({k: set() for k in NAMED})
    try:
        output = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        output = None
    if output is None:  # a sequence classifier (a reward model): its score head is the output layer
        output = getattr(model, "score", None)
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    sets.layers = []
    inside: set[int] = set()
    for module in model.modules():
        own = {id(p) for p in module.parameters(recurse=False)}
        if isinstance(module, torch.nn.Embedding):
            sets["embeddings"] |= own
        if output is not None and module is output:
            sets["output"] |= own
        if "norm" in type(module).__name__.lower():
            sets["norms"] |= own
        sets["biases"] |= {id(p) for n, p in module.named_parameters(recurse=False) if n == "bias"}
        # by the class or a base: FSDP2's fully_shard swaps a block's class for a subclass (FSDPLlamaDecoderLayer)
        if id(module) not in inside and any(c.__name__ in blocks for c in type(module).__mro__):
            sets.layers.append({id(p): n for n, p in module.named_parameters()})
            inside |= {id(m) for m in module.modules()}
    sets["output"] -= sets["embeddings"]  # tied: the one matrix is the embedding
    return sets


def _matches(pattern: str, name: str, param: Any, sets: ParamSets) -> bool:
    if pattern in sets:
        return id(param) in sets[pattern]
    layers = layer_pattern(pattern)
    if layers is not None:
        chosen, glob = layers
        return any(id(param) in layer and fnmatch.fnmatchcase(layer[id(param)], glob) for layer in sets.layers[chosen])
    return fnmatch.fnmatchcase(name, pattern)


def dotted(key: tuple[Any, ...]) -> str:
    """("optim", "groups", 0, "params") -> optim.groups[0].params"""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in key).lstrip(".")


def unmatched(model: Any, decay: Any = "matrices", groups: Iterable[dict[str, Any]] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """The patterns of ``decay`` and ``groups`` that match no trainable parameter, and groups
    left empty because earlier groups took all they match: (recipe key, message) each.

    A named set in ``decay`` may be empty (a model without biases has none to exclude);
    in a group it may not, as a glob may not anywhere: it would be a typo or a wrong model.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sets = named_sets(model)
    found: list[tuple[tuple[Any, ...], str]] = []

    def check(key: tuple[Any, ...], patterns: list[str]) -> None:
        for pattern in patterns:
            if key[1] == "decay" and pattern in sets:
                continue
            if not any(_matches(pattern, n, p, sets) for n, p in trainable):
                found.append((key, f"{pattern!r} matches no trainable parameter"))

    if isinstance(decay, dict):
        check(("optim", "decay", "include"), decay["include"])
        check(("optim", "decay", "exclude"), decay.get("exclude", []))
    taken: set[int] = set()
    for i, group in enumerate(groups):
        key = ("optim", "groups", i, "params")
        before = len(found)
        check(key, group["params"])
        mine = {id(p) for n, p in trainable if id(p) not in taken and any(_matches(q, n, p, sets) for q in group["params"])}
        if len(found) == before and not mine:
            found.append((key, "every parameter it matches belongs to an earlier group"))
        taken |= mine
    return found


def picks(patterns: dict[str, Any], name: str, param: Any, sets: ParamSets) -> bool:
    """Whether ``{"include": [...], "exclude": [...]}`` picks this parameter."""
    return any(_matches(q, name, param, sets) for q in patterns["include"]) and not any(
        _matches(q, name, param, sets) for q in patterns.get("exclude", [])
    )


def trainable_problems(model: Any, trainable: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """What is wrong with ``optim.trainable`` on ``model`` (before anything is frozen): a pattern
    that matches no parameter (a named set in ``exclude`` may be empty), or a choice that
    leaves nothing to train. (recipe key, message) each."""
    params = list(model.named_parameters())
    sets = named_sets(model)
    found: list[tuple[tuple[Any, ...], str]] = []
    for side in ("include", "exclude"):
        for i, pattern in enumerate(trainable.get(side, [])):
            if side == "exclude" and pattern in sets:
                continue
            if not any(_matches(pattern, n, p, sets) for n, p in params):
                count = len(sets.layers)
                layers = f" (the model has {count} decoder layer{'s' * (count != 1)})" if layer_pattern(pattern) is not None else ""
                found.append((("optim", "trainable", side, i), f"{pattern!r} matches no parameter{layers}"))
    if not found and not any(picks(trainable, n, p, sets) for n, p in params):
        found.append((("optim", "trainable", "exclude"), "excludes every parameter that include picks: nothing would train"))
    return found


def freeze(model: Any, trainable: dict[str, Any]) -> tuple[int, int]:
    """Train only the parameters ``optim.trainable`` picks (``{"include": [...], "exclude":
    [...]}``): the others get ``requires_grad = False``, so they have no gradient and no
    optimizer state, and keep their starting values. Returns (trainable parameters, all
    parameters).

    Raises:
        ValueError: a pattern that matches no parameter, or nothing left to train
            (:func:`trainable_problems`).
    """
    problems = trainable_problems(model, trainable)
    if problems:
        raise ValueError("; ".join(f"{dotted(key)}: {message}" for key, message in problems))
    sets = named_sets(model)
    for name, param in model.named_parameters():
        param.requires_grad_(picks(trainable, name, param, sets))
    return count_trainable(model)


def count_trainable(model: Any) -> tuple[int, int]:
    """(trainable parameters, all parameters) of ``model``; a parameter ZeRO-3 partitioned counts whole."""
    def size(p: Any) -> int:
        return int(getattr(p, "ds_numel", p.numel()))

    params = list(model.parameters())
    return sum(size(p) for p in params if p.requires_grad), sum(size(p) for p in params)


def param_groups(model: Any, weight_decay: float, decay: Any = "matrices", groups: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The torch parameter groups of ``model``'s trainable parameters.

    The parameters no ``[[optim.groups]]`` entry takes come first (decayed, then not), then
    each entry's in order (decayed, then not; one group when it sets its own weight decay).
    Each group carries ``lr_scale`` (the LR multiplier: :func:`build` sets ``lr`` from it) and
    ``label``; empty groups are left out. ``decay`` is "matrices" (two or more dimensions),
    "all", or ``{"include": [...], "exclude": [...]}``.

    Raises:
        ValueError: a pattern that matches no trainable parameter (:func:`unmatched`).
    """
    groups = list(groups)
    problems = unmatched(model, decay, groups)
    if problems:
        raise ValueError("; ".join(f"{dotted(key)}: {message}" for key, message in problems))
    sets = named_sets(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def decayed(name: str, param: Any) -> bool:
        if decay == "matrices":
            return ndim(param) >= 2
        if decay == "all":
            return True
        return picks(decay, name, param, sets)

    owner = {}
    for name, param in trainable:
        owner[id(param)] = next(
            (i for i, g in enumerate(groups) if any(_matches(q, name, param, sets) for q in g["params"])), None
        )
    out = []
    for index, group in [(None, {}), *enumerate(groups)]:
        members = [(n, p) for n, p in trainable if owner[id(p)] == index]
        label = "default" if index is None else f"groups[{index}] ({', '.join(group['params'])})"
        scale = float(group.get("lr_scale", 1.0))
        if group.get("weight_decay") is not None:
            parts = [(label, [p for _, p in members], float(group["weight_decay"]))]
        else:
            parts = [
                (f"{label}, decayed", [p for n, p in members if decayed(n, p)], weight_decay),
                (f"{label}, not decayed", [p for n, p in members if not decayed(n, p)], 0.0),
            ]
        out += [{"params": ps, "weight_decay": wd, "lr_scale": scale, "label": lab} for lab, ps, wd in parts if ps]
    return out


def describe(groups: Iterable[dict[str, Any]]) -> list[str]:
    """One line per parameter group: label, tensors, parameters, LR multiplier, weight decay."""
    return [
        f"{g['label']}: {len(g['params'])} tensors, {sum(p.numel() for p in g['params']):,} parameters, "
        f"lr x{g['lr_scale']:g}, weight decay {g['weight_decay']:g}"
        for g in groups
    ]


def with_lr(groups: list[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """The groups with ``lr`` set to ``lr`` times each one's ``lr_scale``."""
    return [{**g, "lr": lr * g["lr_scale"]} for g in groups]


def build(model: Any, spec: dict[str, Any]) -> Any:
    """The optimizer of ``spec`` over the trainable parameters of ``model``."""
    name = spec["name"]
    lr, wd = float(spec["lr"]), float(spec["weight_decay"])
    if name == "muon":
        return MuonWithAdamW(model, spec)
    groups = with_lr(param_groups(model, wd, spec.get("decay", "matrices"), spec.get("groups", ())), lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(spec["betas"]), eps=spec["eps"], **spec.get("implementation_kwargs", {}))
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr, beta2_decay=spec["beta2_decay"], eps=(None, spec["eps"]), d=spec["d"])
    if name == "lion":
        from lion_pytorch import Lion

        return Lion(groups, lr=lr, betas=tuple(spec["betas"]))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=spec["momentum"], nesterov=spec["nesterov"])
    if name == "schedule_free_adamw":
        from schedulefree import AdamWScheduleFree

        optimizer = AdamWScheduleFree(groups, lr=lr, betas=tuple(spec["betas"]), eps=spec["eps"], weight_lr_power=spec["weight_lr_power"])
        optimizer.train()  # it starts in evaluation mode, where it refuses to step
        return optimizer
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        import bitsandbytes.optim as bnb

        cls = bnb.AdamW8bit if name == "adamw_8bit" else bnb.PagedAdamW8bit
        return cls(groups, lr=lr, betas=tuple(spec["betas"]), eps=spec["eps"])
    raise ValueError(f"unknown optimizer {name!r}")


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on the hidden matrices and AdamW on the rest, stepped, saved and scheduled as one optimizer.

    ``param_groups`` lists Muon's groups, then AdamW's (the same dicts the two optimizers
    hold), so an LR scheduler scales each group from its own initial LR. ``split`` names the
    parameters of each side.
    """

    def __init__(self, model: Any, spec: dict[str, Any]) -> None:
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        hidden_ids = {id(p) for n, p in trainable if is_hidden_matrix(n, p)}
        self.split = {"muon": [n for n, p in trainable if id(p) in hidden_ids], "adamw": [n for n, p in trainable if id(p) not in hidden_ids]}
        groups = param_groups(model, float(spec["weight_decay"]), spec.get("decay", "matrices"), spec.get("groups", ()))

        def side(hidden: bool, lr: float) -> list[dict[str, Any]]:
            kept = [{**g, "params": [p for p in g["params"] if (id(p) in hidden_ids) == hidden]} for g in groups]
            return with_lr([g for g in kept if g["params"]], lr)

        kwargs = {"adjust_lr_fn": spec["adjust_lr"]} if spec.get("adjust_lr") else {}
        self.muon = torch.optim.Muon(
            side(True, float(spec["lr"])), lr=float(spec["lr"]), weight_decay=float(spec["weight_decay"]),
            momentum=spec["momentum"], nesterov=spec["nesterov"], ns_steps=spec["ns_steps"], **kwargs,
        )
        self.adamw = torch.optim.AdamW(
            side(False, float(spec["adamw_lr"])), lr=float(spec["adamw_lr"]),
            betas=tuple(spec["adamw_betas"]), eps=spec["adamw_eps"],
        )
        super().__init__([{"params": [p for _, p in trainable]}], {"lr": float(spec["lr"])})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # the two sides' own dicts

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict[Any, Any]:  # torch and accelerate read optimizer.state
        return {**self.muon.state, **self.adamw.state}

    @state.setter
    def state(self, value: Any) -> None:  # the base class sets an empty one; the two sides keep theirs
        pass


class StepInBackward:
    """Step the optimizer one parameter at a time, as the backward pass finishes each gradient
    (`optim.step_in_backward`), and free that gradient at once: the gradients of the whole
    model never exist together, only one tensor's at a time (torchtune's
    ``optimizer_in_bwd``; torch's tutorial "How to save memory by fusing the optimizer step
    into the backward pass").

    It keeps the one ``optimizer`` that :func:`build` made, so its state, its ``state_dict``
    (a checkpoint, ``continual.optimizer``) and the LR schedule over its ``param_groups`` are
    those of the optimizer stepped after the backward pass. A post-accumulate-grad hook on
    each of its parameters (``Tensor.register_post_accumulate_grad_hook``) hides the other
    parameters from ``optimizer.step()``, steps, and sets the gradient to None. The update
    is the same as the step after the backward pass for optimizers whose state is per
    parameter (AdamW, SGD, Adafactor, Lion, Muon), not for schedule-free AdamW, which counts
    its steps per group (the recipe checks refuse it). FSDP 2 calls the hooks on each
    process's shard after the gradients are reduce-scattered; DDP would call them before its
    all-reduce, and is refused.

    Nothing can clip the global norm (a parameter steps before the norm is known), but
    :meth:`finish` returns it: the norm of the gradients stepped since the last call, summed
    over the shards of every process under FSDP 2. Use one micro-batch per optimizer step:
    each backward pass steps.
    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds it
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._sharded = any(hasattr(p, "to_local") for p in params)  # FSDP 2's DTensor shards
        self._layout: tuple[int, ...] = ()
        self._home: dict[int, int] = {}
        self._squares: Any = None
        self._stepped: set[int] = set()
        self._handles = [p.register_post_accumulate_grad_hook(self._step) for p in params]

    def _group_of(self, param: Any) -> int:
        """The index of the group that holds ``param`` (loading a state dict replaces the group dicts)."""
        groups = self.optimizer.param_groups
        layout = tuple(id(g) for g in groups)
        if layout != self._layout:
            self._home = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
            self._layout = layout
        return self._home[id(param)]

    def _step(self, param: Any) -> None:
        if id(param) in self._stepped:
            raise RuntimeError(
                f"optim.step_in_backward: a parameter of shape {tuple(param.shape)} got its gradient twice in one "
                "optimizer step (a second backward pass, or a parameter used in two reentrant checkpointed "
                "regions); it was stepped already"
            )
        self._stepped.add(id(param))
        grad = param.grad
        local = grad.to_local() if hasattr(grad, "to_local") else grad  # an FSDP 2 shard: this process's part
        square = local.detach().float().pow(2).sum()
        self._squares = square if self._squares is None else self._squares + square
        home = self._group_of(param)
        groups = self.optimizer.param_groups
        kept = [group["params"] for group in groups]
        try:
            for index, group in enumerate(groups):
                group["params"] = [param] if index == home else []
            self.optimizer.step()
        finally:
            for group, group_params in zip(groups, kept):
                group["params"] = group_params
        param.grad = None

    def finish(self) -> Any:
        """The global norm of the gradients stepped since the last call (a float32 tensor, 0 when none were),
        and start counting the next step's."""
        import torch

        squares = self._squares
        if squares is None:
            device = next((p.device for g in self.optimizer.param_groups for p in g["params"]), torch.device("cpu"))
            squares = torch.zeros((), device=device)
        if self._sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(squares)  # each process holds the squares of its shards
        self._squares = None
        self._stepped.clear()
        return squares.sqrt()

    def remove(self) -> None:
        """Take the hooks off the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
