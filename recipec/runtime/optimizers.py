"""The optimizers a recipe can name, built from well-kept implementations.

``build(named_parameters, spec)`` returns one ``torch.optim.Optimizer`` for the trainable
parameters; ``spec`` is the recipe's ``[optim]`` table as the plan holds it (``name``, ``lr``,
``weight_decay`` and the optimizer's own options; ``grad_clip`` and ``scaling`` are read
elsewhere). Every optimizer decays the parameters with two or more dimensions (matrices and
embeddings) and never the one-dimensional ones (biases, norm weights).

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

from typing import Any, Iterable

import torch

MODULES = {"lion": "lion_pytorch", "schedule_free_adamw": "schedulefree", "adamw_8bit": "bitsandbytes", "paged_adamw_8bit": "bitsandbytes"}
"""The module each optimizer outside torch imports."""


def missing_module(name: str) -> str | None:
    """The module an optimizer needs and this environment lacks, or None."""
    import importlib.util

    module = MODULES.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        return module
    return None


def is_hidden_matrix(name: str, param: Any) -> bool:
    """Muon's side: a 2-D weight of a hidden layer (not an embedding or the output layer)."""
    lowered = name.lower()
    return param.ndim == 2 and not any(part in lowered for part in ("embed", "lm_head", "wte", "wpe", "output"))


def decay_groups(named: Iterable[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups of the trainable parameters: decayed (2-D and up) and not (1-D); empty groups left out."""
    params = [(n, p) for n, p in named if p.requires_grad]
    groups = [
        {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build(named: Iterable[tuple[str, Any]], spec: dict[str, Any]) -> Any:
    """The optimizer of ``spec`` over the trainable parameters of ``named`` (``model.named_parameters()``)."""
    name = spec["name"]
    named = list(named)
    lr, wd = float(spec["lr"]), float(spec["weight_decay"])
    if name == "muon":
        return MuonWithAdamW(named, spec)
    groups = decay_groups(named, wd)
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

    def __init__(self, named: list[tuple[str, Any]], spec: dict[str, Any]) -> None:
        trainable = [(n, p) for n, p in named if p.requires_grad]
        hidden = [(n, p) for n, p in trainable if is_hidden_matrix(n, p)]
        rest = [(n, p) for n, p in trainable if not is_hidden_matrix(n, p)]
        self.split = {"muon": [n for n, _ in hidden], "adamw": [n for n, _ in rest]}
        kwargs = {"adjust_lr_fn": spec["adjust_lr"]} if spec.get("adjust_lr") else {}
        self.muon = torch.optim.Muon(
            [p for _, p in hidden], lr=float(spec["lr"]), weight_decay=float(spec["weight_decay"]),
            momentum=spec["momentum"], nesterov=spec["nesterov"], ns_steps=spec["ns_steps"], **kwargs,
        )
        self.adamw = torch.optim.AdamW(
            decay_groups(rest, float(spec["weight_decay"])), lr=float(spec["adamw_lr"]),
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
