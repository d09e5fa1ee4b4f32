"""`recipec check`: the preflight that knows the model.

validate and build never import torch. The checks that need the model's real modules (do
the PEFT targets exist? how many parameters will train?) run here, on a model
instantiated on the meta device from its config: no weights are read and nothing is
downloaded. A hub model without a local config cannot be checked here; the generated
script runs the same check (`recipec_runtime/adapters.py`) as its first act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .resolve import Plan
from .schema.model import LOCAL_PREFIXES


@dataclass
class CheckReport:
    """What the preflight found."""

    model: str
    checked: bool
    """False when the model's config is not available without a download."""
    problems: list[str] = field(default_factory=list)
    all_params: int | None = None
    trainable_params: int | None = None

    def lines(self) -> list[str]:
        if not self.checked:
            return [f"{self.model}: no local config; the training script checks the model when it starts"]
        out = []
        if self.all_params is not None:
            out.append(f"{self.model}: {self.all_params:,} parameters")
        if self.trainable_params is not None and self.all_params:
            share = 100 * self.trainable_params / self.all_params
            out.append(f"trainable: {self.trainable_params:,} ({share:.3f}%)")
        return out


def check(plan: Plan, project: Path = Path(".")) -> CheckReport:
    """Instantiate the plan's model on the meta device and check what depends on it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = _config(plan, project, AutoConfig)
    label = plan["model_init"] or plan["model_path"]
    if config is None:
        return CheckReport(label, checked=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    report = CheckReport(f"{type(model).__name__} ({label})", checked=True)
    report.all_params = sum(p.numel() for p in model.parameters())
    spec = plan.get("peft_spec")
    if spec is not None:
        from .runtime import adapters

        report.problems = adapters.check_targets(model, spec)
        if not report.problems:
            if spec.get("init") in ("pissa", "olora"):  # computed from real weights; the count is the default init's
                spec = {**spec, "init": "default"}
            model = adapters.apply(model, spec, total_steps=plan.get("max_steps"))
            report.trainable_params, report.all_params = adapters.trainable_parameters(model)
    return report


def _config(plan: Plan, project: Path, auto_config: Any) -> Any:
    if plan["model_init"] is not None:
        train = plan["tokenizer_train"]
        vocab = train["vocab_size"] if train else _local_vocab(plan["tokenizer_path"], project)
        if vocab is None:
            return None
        return auto_config.for_model(plan["model_init"], vocab_size=vocab, **plan["model_config"])
    path = plan["model_path"]
    if not path.startswith(LOCAL_PREFIXES):
        return None
    return auto_config.from_pretrained(str((project / Path(path).expanduser())), trust_remote_code=plan["trust_remote_code"])


def _local_vocab(path: str | None, project: Path) -> int | None:
    if path is None or not path.startswith(LOCAL_PREFIXES):
        return None
    from .runtime.tokenizer import load_tokenizer

    return len(load_tokenizer(str(project / Path(path).expanduser())))
