"""`recipec check`: the preflight that knows the model.

validate and build never import torch. The checks that need the model's real modules (do
the PEFT targets exist? how many parameters will train?) run here, on a model
instantiated on the meta device from its config: no weights are read and nothing is
downloaded. A hub model is checked on the config.json of its snapshot in the local Hugging Face
cache (at `model.revision`); one not in the cache cannot be checked here, and the generated
script runs the same check (`recipec_runtime/adapters.py`) as its first act.

A local model that cannot be loaded (no config.json, a config that transformers does not
read or cannot build a causal LM from) is a mistake in the recipe: a RecipeError at
`model.path` (or `continual.from`, whose checkpoint is the model), never a traceback. That
the directory exists at all is checked when the recipe is read (`recipec.local_files`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import Diagnostic, RecipeError
from .resolve import Plan
from .schema.model import LOCAL_PREFIXES
from .source import KeyPath, SourceMap

_GROUP_HELP = (
    "patterns are fnmatch globs on the names model.named_parameters() gives (e.g. \"*.mlp.*\"), embeddings, output, norms, "
    "biases, or decoder layers by index (layers[-2:], layers[:4].mlp.*)"
)
_MODEL_HELP = "a local model is a directory that save_pretrained wrote (config.json and the weights); a hub id has no leading ./, ../, / or ~"


@dataclass
class CheckReport:
    """What the preflight found."""

    model: str
    checked: bool
    """False when the model's config is not available without a download."""
    problems: list[str] = field(default_factory=list)
    all_params: int | None = None
    trainable_params: int | None = None
    groups: list[str] = field(default_factory=list)
    """The optimizer's parameter groups, one line each, as the script logs them."""

    def lines(self) -> list[str]:
        if not self.checked:
            return [f"{self.model}: no local config (a hub model not in the local cache); the training script checks the model when it starts"]
        out = []
        if self.all_params is not None:
            out.append(f"{self.model}: {self.all_params:,} parameters")
        if self.trainable_params is not None and self.all_params:
            share = 100 * self.trainable_params / self.all_params
            out.append(f"trainable: {self.trainable_params:,} ({share:.3f}%)")
        out += self.groups
        return out


def check(plan: Plan, project: Path = Path("."), source: SourceMap | None = None) -> CheckReport:
    """Instantiate the plan's model on the meta device and check what depends on it.

    Args:
        plan: the resolved recipe.
        project: the directory that the recipe's relative paths are relative to.
        source: the recipe's source map, to point an error at its line.

    Raises:
        RecipeError: a local model that does not load, at the key that names it.
        DataError: a local tokenizer that does not load (for a from-scratch model).
    """
    directory = _local_model(plan, project, source)  # before torch is imported: a wrong path is told at once
    import torch
    import transformers
    from transformers import AutoConfig

    from .runtime.preference import auto_model

    config = _config(plan, project, AutoConfig, directory, source)
    label = plan["model_init"] or plan["model_path"]
    if config is None:
        return CheckReport(label, checked=False)
    reward = plan.get("objective") == "reward"  # a reward model: a one-label sequence classifier
    if reward:
        config.num_labels = 1
    try:
        with torch.device("meta"):
            model = getattr(transformers, auto_model(plan.get("objective"))).from_config(config)
    except (ValueError, KeyError, TypeError, ImportError, OSError) as exc:  # a config of no causal LM (BERT), or one that does not build
        if plan["model_init"] is not None:
            what = f"cannot build a {plan['model_init']} model from `model.config`"
        else:
            what = f"cannot build the model in `{plan['model_path']}` from its config"
        raise _model_error(plan, source, f"{what}: {_reason(exc)}") from None
    report = CheckReport(f"{type(model).__name__} ({label})", checked=True)
    report.all_params = sum(p.numel() for p in model.parameters())
    spec = plan.get("peft_spec")
    if spec is not None:
        from .runtime import adapters

        report.problems = adapters.check_targets(model, spec)
        if not report.problems:
            if spec.get("init") in ("pissa", "olora"):  # computed from real weights; the count is the default init's
                spec = {**spec, "init": "default"}
            model = adapters.apply(model, spec, total_steps=plan.get("max_steps"), task_type="SEQ_CLS" if reward else "CAUSAL_LM")
            report.trainable_params, report.all_params = adapters.trainable_parameters(model)
    trainable = plan.get("trainable")
    if trainable is not None:
        from .runtime import optimizers

        _raise_at(optimizers.trainable_problems(model, trainable), source)
        report.trainable_params, report.all_params = optimizers.freeze(model, trainable)
    if not report.problems:
        report.groups = _groups(plan, model, source)
    return report


def _raise_at(problems: list[tuple[KeyPath, str]], source: SourceMap | None) -> None:
    """A RecipeError at each (recipe key, message) of ``problems``; nothing when there are none."""
    if problems:
        raise RecipeError(
            [
                Diagnostic("error", message, source.locate(key) if source is not None else None, _GROUP_HELP)
                for key, message in problems
            ]
        )


def _groups(plan: Plan, model: Any, source: SourceMap | None) -> list[str]:
    """The optimizer's parameter groups on the meta model, in the script's words; a pattern
    of optim.decay or [[optim.groups]] that matches no trainable parameter is an error at it."""
    from .runtime import optimizers

    decay, groups = plan.get("param_decay", "matrices"), plan.get("param_groups") or []
    _raise_at(optimizers.unmatched(model, decay, groups), source)
    lines = [f"param group {line}" for line in optimizers.describe(optimizers.param_groups(model, plan["weight_decay"], decay, groups))]
    if plan["optimizer_name"] == "muon":
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        hidden = [p for n, p in trainable if optimizers.is_hidden_matrix(n, p)]
        rest = [p for n, p in trainable if not optimizers.is_hidden_matrix(n, p)]
        lines.append(
            f"muon: {len(hidden)} hidden matrices ({sum(p.numel() for p in hidden):,} parameters); "
            f"adamw: {len(rest)} embedding, output, norm and bias tensors ({sum(p.numel() for p in rest):,})"
        )
    return lines


def _local_model(plan: Plan, project: Path, source: SourceMap | None) -> Path | None:
    """The directory of a pretrained local model, checked to hold a config.json; a hub model's
    snapshot in the local Hugging Face cache when it holds one; None for a from-scratch model
    or a hub model not in the cache."""
    path = plan["model_path"]
    if plan["model_init"] is not None or path is None:
        return None
    if not path.startswith(LOCAL_PREFIXES):
        from .runtime.hub import cached_snapshot

        snapshot = cached_snapshot(path, plan.get("model_revision"))
        return Path(snapshot) if snapshot is not None and (Path(snapshot) / "config.json").is_file() else None
    try:
        directory = project / Path(path).expanduser()
        found = (directory / "config.json").is_file()
    except (RuntimeError, OSError):  # ~user that does not exist, a name too long: no config either
        found = False
    if not found:
        raise _model_error(plan, source, f"no config.json in `{path}`")
    return directory


def _config(plan: Plan, project: Path, auto_config: Any, directory: Path | None, source: SourceMap | None) -> Any:
    if plan["model_init"] is not None:
        train = plan["tokenizer_train"]
        vocab = train["vocab_size"] if train else _local_vocab(plan["tokenizer_path"], project)
        if vocab is None:
            return None
        # the script takes the special token ids from the tokenizer; a model type's own (phi3's
        # pad_token_id 32000) may lie outside this vocabulary, so none are assumed here
        tokens = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
        return auto_config.for_model(plan["model_init"], vocab_size=vocab, **tokens, **plan["model_config"])
    if directory is None:
        return None
    try:
        config = auto_config.from_pretrained(str(directory), trust_remote_code=plan["trust_remote_code"])
    except Exception as exc:  # noqa: BLE001 -- transformers raises anything from a bad config; name it, not a traceback
        raise _model_error(plan, source, f"cannot read the model's config in `{plan['model_path']}`: {_reason(exc)}") from None
    overrides = plan.get("model_overrides")
    if overrides:  # [model.config] over the pretrained model, as the script replaces its keys
        from .runtime import model_config

        problem = model_config.override(config, overrides)
        if problem:
            location = source.locate(("model", "config")) if source is not None else None
            raise RecipeError([Diagnostic("error", problem, location)])
    return config


def _model_error(plan: Plan, source: SourceMap | None, message: str) -> RecipeError:
    """An error at the recipe key that names the model: `model.config` for a from-scratch
    model, `continual.from` when the model is the parent run's, else `model.path`."""
    key: KeyPath = ("model", "path")
    if plan["model_init"] is not None:
        key = ("model", "config")
    elif plan.recipe.continual is not None:
        key = ("continual", "from")
    location = source.locate(key) if source is not None else None
    return RecipeError([Diagnostic("error", message, location, None if plan["model_init"] is not None else _MODEL_HELP)])


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (transformers adds paragraphs of advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:  # "Validation error for field 'x':" and what is wrong with it
        first = f"{first} {lines[1]}"
    return first.rstrip(".")


def _local_vocab(path: str | None, project: Path) -> int | None:
    if path is None or not path.startswith(LOCAL_PREFIXES):
        return None
    from .runtime.tokenizer import load_tokenizer

    return len(load_tokenizer(str(project / Path(path).expanduser())))
