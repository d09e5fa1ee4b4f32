"""render: `Plan` -> {relative path: file text}, through jinja2 templates.

Template rules (they keep generated code reviewable and recipe strings inert):

* Templates substitute, wrap whole sections in ``{% if %}`` and loop over lists prepared
  here. No arithmetic, no ``default()``, no string munging in a template: anything that
  needs it is computed in `recipec.resolve` or below.
* Every value that reaches generated Python goes through `py_literal` (the ``py``
  filter): the repr of str/int/float/bool/None/list/dict, and an error for anything
  else. Quoting is never written by hand, so no recipe string can become code. YAML
  values go through `yaml_scalar` (JSON scalars are valid YAML) and values in shell
  scripts (launch.sh, slurm.sbatch) through `shell_word` (``shlex.quote``), for the same
  reason.
* ``StrictUndefined``: a misspelt variable is an error, never an empty string.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import tomli_w

from .resolve import PLAIN_PATH, Plan
from .resolve.train import packed_rows
from .runtime import preference as runtime_preference
from .runtime import schedule as runtime_schedule
from .runtime import stage_request
from .schema.optim import own_options
from .schema.schedule import DECAY_KEYS, SHORTHAND_KEYS

LINE_WIDTH = 100
COMMENT_COLUMN = 32


def template_dir() -> Path:
    """The templates: inside the installed package, or templates/ of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "train.py.j2").is_file():
            return candidate
    raise FileNotFoundError(f"recipec's templates are missing (looked in {here / 'templates'} and {here.parent / 'templates'})")


def py_literal(value: Any) -> str:
    """The Python literal for a recipe value.

    Raises:
        TypeError: for anything that is not None, bool, int, finite float, str, or a
            list/tuple/dict of those; such a value must never be embedded in code.
    """
    _check_literal(value)
    return _format(value, 0)


def _format(value: Any, indent: int) -> str:
    """repr, broken one item per line (black style) when it would not fit."""
    text = repr(value)
    if len(text) + indent <= LINE_WIDTH or not isinstance(value, list | tuple | dict) or not value:
        return text
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{pad}{k!r}: {_format(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    items = [f"{pad}{_format(v, indent + 4)}," for v in value]
    open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
    return open_ + "\n" + "\n".join(items) + "\n" + " " * indent + close


def _check_literal(value: Any) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot embed non-finite float {value!r} in generated code")
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check_literal(v)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cannot embed a dict with key {k!r} in generated code")
            _check_literal(v)
        return
    raise TypeError(f"cannot embed a value of type {type(value).__name__} in generated code")


def yaml_scalar(value: Any) -> str:
    """A YAML scalar for a config value (JSON scalars are valid YAML 1.2 and 1.1).

    A string is double-quoted with everything outside printable ASCII escaped: JSON's
    surrogate pairs for characters beyond U+FFFF are not joined by YAML readers, and
    PyYAML refuses some characters (DEL, C1 controls) anywhere in a file.
    """
    if isinstance(value, str):
        return '"' + "".join(_yaml_char(ch) for ch in value) + '"'
    if value is None or isinstance(value, bool | int | float):
        _check_literal(value)
        return json.dumps(value)
    raise TypeError(f"cannot embed a value of type {type(value).__name__} in YAML")


def _yaml_char(ch: str) -> str:
    code = ord(ch)
    if ch in '"\\':
        return "\\" + ch
    if 0x20 <= code < 0x7F:
        return ch
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shell_word(value: Any) -> str:
    """One shell word for a config value (`shlex.quote` of a string or an integer).

    Raises:
        TypeError: for anything but a str or an int.
        ValueError: for a string with a line break or another unprintable character: quoted,
            it is one word to bash, but it would end a comment or an `#SBATCH` line, and the
            schema lets none through (names, hosts and paths have patterns).
    """
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the misspelt variable
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"cannot embed a value of type {type(value).__name__} in a shell script")
    text = str(value)
    if not text.isprintable():
        raise ValueError(f"cannot embed {text!r} in a shell script: it has unprintable characters")
    return shlex.quote(text)


def comment(text: str) -> str:
    """Text safe to put after `#` (Python, shell, YAML): one line, its unprintable characters escaped.

    Python ends a comment at \\n or \\r only, but a NUL byte makes the file unreadable and
    bidirectional controls (U+202E) make the comment read differently from the code.
    """
    line = " ".join(str(text).split())
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in line)


def plain_path(path: str) -> str:
    """A path that may be written into docstrings and shell comments as is."""
    if not PLAIN_PATH.match(path):
        raise ValueError(
            f"path {path!r} has characters that cannot be written into a generated script's docstring; "
            "use letters, digits and ./_-+@:~"
        )
    return path


class _MemoryBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates, shared by the environments of one process: jinja2 compiles a
    template to Python on every load otherwise, which dominates a build's time. A bucket is
    keyed on the template's file and checked against its source's checksum, so an edited
    template is compiled again."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _MemoryBytecodeCache()


def environment() -> jinja2.Environment:
    """The one jinja2 environment every template is rendered with."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        bytecode_cache=_BYTECODE,
    )
    env.filters["py"] = py_literal
    env.filters["yaml"] = yaml_scalar
    env.filters["sh"] = shell_word
    env.filters["comment"] = comment
    return env


def config_block(plan: Plan) -> list[tuple[str, list[str]]]:
    """The generated script's config block: (section title, lines), comments aligned."""
    sections: dict[str, list[str]] = {}
    for s in plan.settings:
        sections.setdefault(s.section, []).extend(_assignment(s.name, s.value, s.note))
    return list(sections.items())


def formula_lines(plan: Plan) -> list[str]:
    """Assignments computed by the script from the loaded data, with their notes."""
    lines: list[str] = []
    for f in plan.formulas:
        code = f"{f.name} = {f.expr}"
        lines.append(f"{code.ljust(COMMENT_COLUMN - 2)}  # {comment(f.note)}")
    return lines


def _assignment(name: str, value: Any, note: str) -> list[str]:
    literal = py_literal(value)
    code = f"{name} = {literal}"
    if "\n" in literal:
        return [f"# {comment(note)}", code]
    return [f"{code.ljust(COMMENT_COLUMN - 2)}  # {comment(note)}"]


def resolved_toml(plan: Plan) -> str:
    """Every setting after defaults and overrides, as a recipe that builds the same plan."""
    recipe = plan.recipe
    data = recipe.model_dump(exclude_none=True, by_alias=True)  # `from`, not the field's `from_`
    # leave out what the recipe could not have said: it must validate as written
    if recipe.model.init is None:
        data["model"].pop("config", None)
    if not recipe.model.compile:
        data["model"].pop("compile_mode", None)
    for source, dumped in zip(recipe.data.sources, data["data"]["sources"]):
        if source.builtin is not None or source.records != "text":
            dumped.pop("text_field", None)
    if plan.get("chat_template") is not None:  # the template itself, as built: a later edit of its file is a change
        data["tokenizer"]["chat_template"] = plan["chat_template"]
    schedule = data["schedule"]
    if recipe.continual is not None:  # continual.rewarm_from says where the warmup starts
        schedule.pop("warmup_start_ratio", None)
    if recipe.schedule.min_lr is not None:
        schedule.pop("min_lr_ratio", None)
    if recipe.schedule.phases is not None:
        for key in SHORTHAND_KEYS:
            schedule.pop(key, None)
    else:
        for decay, keys in DECAY_KEYS.items():
            if decay != recipe.schedule.decay:
                for key in keys:
                    schedule.pop(key, None)
    data = {table: values for table, values in data.items() if values}
    header = (
        f"# Every setting of {comment(plan.recipe_file)} after defaults and --set overrides,\n"
        f"# written by recipec {plan.version}. It is itself a recipe and builds the same plan.\n\n"
    )
    return header + tomli_w.dumps(data)


def lr_values(plan: Plan) -> list[float] | None:
    """The LR of every optimizer step, or None while the run's length depends on the data."""
    phases = plan.get("schedule_phases")
    if phases is None:
        return None
    peak = plan["lr"]
    return [peak * f for f in runtime_schedule.values(phases, plan["max_steps"])]


def schedule_csv(plan: Plan) -> str | None:
    """`step,lr` for every optimizer step (step 0 is the first update)."""
    phases = plan.get("schedule_phases")
    if phases is None:
        return None
    return runtime_schedule.lr_csv(phases, plan["max_steps"], plan["lr"])


def schedule_plot(plan: Plan, plot: Callable[..., bytes] | None = None) -> bytes | None:
    """schedule.png: the LR over the run, phases shaded and named, peak and floor marked.

    ``plot`` draws it (`recipec.plot.schedule_png`'s signature); the default is that function,
    `recipec.plot.cached` gives one that reuses earlier drawings.
    """
    if plot is None:
        from .plot import schedule_png as plot

    values = lr_values(plan)
    if values is None:
        return None
    phases = plan["schedule_phases"]
    floors = [p["end"] for p in phases if p["end"] < p["start"]]  # where the decays go, not where a warmup starts
    floor = min(floors) * plan["lr"] if floors else None
    return plot(values, phases, title=f"{plan.name}: learning rate", peak_lr=plan["lr"], min_lr=floor)


def render(plan: Plan, plot: Callable[..., bytes] | None = None) -> dict[str, str | bytes]:
    """Render every generated file of a build; ``plot`` draws schedule.png (see `schedule_plot`).

    Returns:
        {path relative to the build directory: text or bytes}; the runtime package and
        the lock are added by `recipec.build`. schedule.csv and schedule.png are left out
        when the run's length depends on the data (`train.epochs`); slurm.sbatch is written
        only for more than one machine.
    """
    env = environment()
    context = {
        "plan": plan,
        "recipe": plan.recipe,
        "version": plan.version,
        "name": plan.name,
        "build_dir": plain_path(plan.build_dir.rstrip("/")),
        "launch_command": plan.launch_command,
        "recipe_file": plan.recipe_file,
        "project_dir": plan.project_dir,
        "config": config_block(plan),
        "formulas": formula_lines(plan),
        "overrides": list(plan.overrides),
        "stage_fields": stage_request.FIELDS,
        "peft_quantize": plan.get("peft_quantize"),
        "examples": plan["examples"],
        # data.cross_document_attention = false: position ids restart after each end-of-text token
        "document_positions": not plan.recipe.data.cross_document_attention,
        # rows that hold several sequences kept apart by position ids: the script checks the loaded model honours them
        "packed_rows": packed_rows(plan.recipe, plan["examples"]) is not None,
        "eval_sets": any(src.split == "eval" for src in plan.recipe.data.sources),  # evaluated and logged apart
        "preference": plan.recipe.preference is not None,
        "reward": plan.get("objective") == "reward",  # a reward model: a one-label sequence classifier
        "reward_margin": bool(plan.get("reward_margin")),  # its pairs carry a margin (data fields.margin)
        "wpo": bool((plan.get("objective_options") or {}).get("wpo")),  # preference.wpo: the aligned log-probabilities too
        "ld": (plan.get("objective_options") or {}).get("ld_alpha") is not None,  # preference.ld_alpha: the shared sums too
        "auto_model": runtime_preference.auto_model(plan.get("objective")),
        "schedule_free": plan.recipe.optim.name == "schedule_free_adamw",
        "optimizer_options": own_options(plan.recipe.optim),
        "grouped": plan.get("param_groups") is not None,
        "freezes": plan.get("trainable") is not None,  # optim.trainable: some parameters are frozen
        "reference": plan.get("reference"),
        "reference_model": plan.get("reference_model"),
        # the frozen copy of a live reference under FSDP: sharded as the model is (preference.fsdp_reference)
        "fsdp_reference": plan.get("reference_model") == "copy" and plan["strategy"] == "fsdp",
        "reference_sync": plan.get("reference_sync_every") is not None,  # TR-DPO: the copy moves toward the policy
        "cross_entropy": plan.get("cross_entropy"),  # None: no [loss], the model's own loss
        "smoothed": bool(plan.get("label_smoothing")),  # loss.label_smoothing: the loss computed from the logits
        "dft": plan.get("loss_type") == "dft",  # loss.type "dft": each token's NLL weighted by its probability (from the logits)
        "router_aux": plan.get("router_aux_loss_coef") is not None,
        "in_backward": bool(plan.get("step_in_backward")),  # optim.step_in_backward: hooks step each parameter
        "zero3": plan.get("deepspeed_zero_stage") == 3,  # the model is built partitioned (zero.Init)
        "zero_stage": plan.get("deepspeed_zero_stage"),  # None: not under DeepSpeed
        "early_stopping": plan.get("early_stopping_patience") is not None,  # train.early_stopping_patience
        "save_best": bool(plan.get("save_best")),  # output.save_best: the model of the lowest held-out loss
        # every forward needs every process (ZeRO-3, FSDP, tensor parallelism): all of them generate
        "sharded_model": plan["num_processes"] > 1
        and (plan.get("deepspeed_zero_stage") == 3 or plan["strategy"] == "fsdp" or plan.launch.tensor_parallel),
        "pretrained_overrides": plan.get("model_overrides") is not None,  # [model.config] over a pretrained model
        "parent_adapter": plan.get("parent_adapter") is not None,  # continual.from a PEFT run without its merged model
        "peft_adapter": plan.get("peft_adapter") is not None,  # peft.adapter: a saved adapter goes on training
        "peft_adapter_revision": plan.get("peft_adapter_revision") is not None,  # peft.adapter_revision: a hub adapter's revision
        # a pretrained model: run.json records what was loaded (a hub model's commit)
        "model_pretrained": plan.get("model_init") is None and plan.get("model_path") is not None,
        # what the lock may pin at a hub commit (a pretrained model, tokenizer.path, peft.adapter): the script warns
        # when the local cache has moved since the build
        "hub_pinned": plan.get("model_init") is None and plan.get("model_path") is not None
        or plan.recipe.tokenizer.path is not None
        or plan.get("peft_adapter") is not None,
        **dataclasses.asdict(plan.launch),
    }
    files: dict[str, str | bytes] = {
        "train.py": env.get_template("train.py.j2").render(context),
        "accelerate_config.yaml": env.get_template("accelerate_config.yaml.j2").render(context),
        "launch.sh": env.get_template("launch.sh.j2").render(context),
        "resolved.toml": resolved_toml(plan),
    }
    if plan["num_machines"] > 1:
        files["slurm.sbatch"] = env.get_template("slurm.sbatch.j2").render(context)
    csv = schedule_csv(plan)
    if csv is not None:
        files["schedule.csv"] = csv
        files["schedule.png"] = schedule_plot(plan, plot)
    return files
