"""The `recipec` command line (click).

Every command but `run` is pure compilation and never imports torch, so it starts in a
fraction of a second: each command imports only what it uses, and the review commands
(diff, verify, plot, runs) are imported when they are called. A mistake in a recipe
prints every error at once, pointing at the file, line and key, and exits with status 2;
a traceback always means a bug in recipec. Every message goes through `recipec.report`,
click's own usage errors included.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__, report
from .diagnostics import RecipeError, visible_text

F = TypeVar("F", bound=Callable[..., Any])

TELEMETRY_OFF = {"HF_HUB_DISABLE_TELEMETRY": "1", "DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
"""Environment that turns off the usage reports of huggingface_hub, mlflow and tools that honour DO_NOT_TRACK."""

COMPILE_ENV = {"PYDANTIC_DISABLE_PLUGINS": "__all__"}
"""Environment for recipec's own process, taken back before training is launched. pydantic
looks for plugins in the metadata of every installed package when it first builds a
validator, which takes longer than validating a recipe; the recipe's models use none."""


def _set_option(fn: F) -> F:
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a recipe key, e.g. --set train.max_steps=20 (value in TOML syntax; repeatable). "
        "Recorded in the build.",
    )(fn)


class _Commands(MutableMapping[str, click.Command]):
    """A group's commands, some named by where they live and imported when first looked up.

    `recipec validate` then never imports the modules of `diff`, `verify` or `plot`; the
    names are known without an import, so the group lists them as usual.
    """

    def __init__(self, lazy: dict[str, tuple[str, str]]):
        self._lazy = dict(lazy)  # name -> (module, attribute)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name in self._lazy:
            module, attribute = self._lazy.pop(name)
            self._loaded[name] = getattr(importlib.import_module(module, __package__), attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._lazy.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if self._lazy.pop(name, None) is None:
            del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._loaded, *self._lazy])

    def __len__(self) -> int:
        return len(self._loaded) + len(self._lazy)


class _Group(click.Group):
    """The root command: click's usage errors and ClickExceptions are reported in the
    house format (`recipec.report`), with click's exit status (2 for a usage error)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            raise _reported(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise _reported(exc) from None


def _reported(exc: click.ClickException) -> click.ClickException | click.exceptions.Exit:
    """Print `exc` through the reporter and return the exit that ends the command."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # `recipec` alone prints the help
        return exc
    report.click_error(exc)
    return click.exceptions.Exit(exc.exit_code)


REVIEW_COMMANDS = {
    "diff": (".diff", "diff"),
    "verify": (".verify", "verify"),
    "plot": (".runs", "plot"),
    "runs": (".runs", "runs"),
    "predict": (".predict", "predict_command"),
}
"""Commands that read builds and runs rather than compile, imported when called."""


@click.group(
    "recipec",
    cls=_Group,
    commands=_Commands(REVIEW_COMMANDS),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="recipec")
@click.option("--color/--no-color", default=None, help="Colour diagnostics (default: when stderr is a terminal).")
def main(color: bool | None) -> None:
    """recipec: compile a TOML training recipe into a readable training script, and run it.

    \b
      recipec init recipes/my-run.toml       write a commented starter recipe
      recipec import x.yml --from axolotl    another tool's config as a recipe, key by key
      recipec validate recipes/my-run.toml   every error at once, with file:line:col
      recipec explain recipes/my-run.toml    every value, where it came from, derived numbers
      recipec build recipes/my-run.toml      write build/<name>/: train.py, accelerate config, lock
      recipec check recipes/my-run.toml      preflight against the model (meta device)
      recipec data recipes/my-run.toml       run the data stage: filter, dedup, tokenize, pack
      recipec diff HEAD:recipes/x.toml recipes/x.toml   what changed, derived values and LR included
      recipec verify build/my-run            recipe, templates, files, data and packages against the lock
      recipec runs                           list runs with their lock hash and final metrics
      recipec plot runs/a runs/b             loss, eval loss and LR against steps and tokens
      recipec predict recipes/x.toml --from runs/a   x's loss by phase, from a's curve and the schedules
      recipec run recipes/my-run.toml        build, check, then accelerate launch

    Exit status: 0 success; 1 differences or drift found (diff, verify, schema --check),
    or bad data; 2 a mistake in the recipe or the arguments; `run`: the training's own.
    """
    # set before `check`, `data` or `run` import huggingface_hub (it reads them once), and
    # inherited by the launched training; the generated script sets the same
    for var, value in TELEMETRY_OFF.items():
        os.environ.setdefault(var, value)
    ctx = click.get_current_context()
    ctx.meta["recipec.compile_env"] = [var for var in COMPILE_ENV if var not in os.environ]
    for var in ctx.meta["recipec.compile_env"]:
        os.environ[var] = COMPILE_ENV[var]
        ctx.call_on_close(lambda var=var: os.environ.pop(var, None))


@main.command(short_help="Write a commented starter recipe.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="recipes/quickstart.toml")
@click.option("--name", help="recipe.name (default: the file name without .toml).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, name: str | None, force: bool) -> None:
    """Write a commented starter recipe to PATH (default recipes/quickstart.toml).

    The starter trains a small Llama from scratch on Python's own documentation, on CPU,
    with a tokenizer trained on the same text: nothing to download.
    """
    from .render import environment
    from .schema import RecipeTable

    name = name or path.stem
    try:
        RecipeTable(name=name)
    except Exception:
        raise click.BadParameter(
            f"{name!r} is not a valid recipe.name: use letters, digits, '.', '_' and '-'", param_hint="--name"
        ) from None
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")
    env = environment()
    env.filters["toml"] = json.dumps
    text = env.get_template("init.toml.j2").render(name=name, path=path.as_posix())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}\nnext: recipec build {path.as_posix()}")


@main.command(short_help="Check recipes; every error at once.")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@_set_option
def validate(recipes: tuple[Path, ...], overrides: tuple[str, ...]) -> None:
    """Check one or more recipes: schema, cross-field rules and warnings. Nothing is written."""
    from .compiler import plan_recipe

    failed = False
    for recipe in recipes:
        try:
            plan, _ = plan_recipe(recipe, overrides)
        except RecipeError as exc:
            report.diagnostics(exc.diagnostics)
            failed = True
            continue
        report.diagnostics(plan.warnings)
        click.echo(visible_text(f"ok: {recipe.as_posix()} ({plan.name})"))
    if failed:
        sys.exit(report.EXIT_USAGE)


@main.command(short_help="Show every value, its origin and the derived numbers.")
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("-o", "--output", "build_dir", type=click.Path(path_type=Path), help="Build directory to plan for.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--lr-csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write `step,lr` for every optimizer step to this file (step 0 is the first update).",
)
@click.option(
    "--data",
    "with_data",
    is_flag=True,
    help="Also run the data stage (or read its cache entry, as train.py would) and show what follows from the data: "
    "rows, how full the micro-batches are, supervised tokens, and with train.epochs the steps and the schedule.",
)
def explain(
    recipe: Path, overrides: tuple[str, ...], build_dir: Path | None, as_json: bool, lr_csv: Path | None, with_data: bool
) -> None:
    """Show the resolved plan: every value, where it came from, and the derived numbers."""
    from .compiler import plan_recipe
    from .render import schedule_csv

    try:
        plan, _ = plan_recipe(recipe, overrides, build_dir)
    except RecipeError as exc:
        report.fail(exc)
    report.diagnostics(plan.warnings)
    notes = _override_notes(recipe, overrides, build_dir, plan)
    data = _data_figures(plan) if with_data else None
    if lr_csv is not None:
        if data is not None:
            from .data_figures import lr_csv as data_lr_csv

            csv = data_lr_csv(plan, data["computed"])
        else:
            csv = schedule_csv(plan)
        if csv is None:
            raise click.ClickException(
                "the run's length depends on the data (train.epochs): add --data to run the data stage (or read its "
                "cache entry) and lay the schedule out as train.py will"
            )
        lr_csv.parent.mkdir(parents=True, exist_ok=True)
        lr_csv.write_text(csv, encoding="utf-8")
        report.info(f"wrote {lr_csv.as_posix()} ({csv.count(chr(10)) - 1} steps)")
    if as_json:
        payload = {
            "name": plan.name,
            "recipe_file": plan.recipe_file,
            "build_dir": plan.build_dir,
            "overrides": list(plan.overrides),
            "settings": [
                {"name": s.name, "value": s.value, "section": s.section, "note": s.note, "origin": s.origin}
                for s in plan.settings
            ],
            "formulas": [{"name": f.name, "expr": f.expr, "note": f.note} for f in plan.formulas],
            "memory": None if plan.memory is None else dataclasses.asdict(plan.memory),
            "model_config_source": plan.model_config_source,
        }
        if plan.memory is None:
            payload["memory_unknown"] = plan.memory_unknown
        if data is not None:
            payload["data"] = data
        payload["notes"] = notes
        click.echo(json.dumps(payload, indent=2))
        return
    text = _explain_text(plan)
    if data is not None:
        from .data_figures import text as data_text

        text += "\n" + "\n".join(data_text(plan, data))
    if notes:
        text += "\n\n[notes]\n" + "\n".join(f"  {note}" for note in notes)
    click.echo(visible_text(text))  # phase names and derived notes carry recipe text


def _data_figures(plan: Any, num_proc: int | None = None) -> dict:
    """`recipec.data_figures.figures` of the plan's data stage entry (run if absent), reporting bad data (exit 1)."""
    from .data_figures import figures, run_stage
    from .runtime.readers import DataError

    try:
        out = run_stage(plan, log=report.info, num_proc=num_proc)
    except DataError as exc:
        report.fail(str(exc), report.EXIT_FAILED)
    return figures(plan, out)


def _explain_text(plan: Any) -> str:
    from .resolve.schedule import describe

    width = max(len(s.name) for s in plan.settings)
    values = {s.name: repr(s.value) for s in plan.settings}
    vwidth = min(40, max(len(v) for v in values.values()))
    lines = [f"{plan.name}  ({plan.recipe_file} -> {plan.build_dir}/)"]
    if plan.overrides:
        lines.append("overrides: " + " ".join(f"--set {o}" for o in plan.overrides))
    section = None
    for s in plan.settings:
        if s.section != section:
            section = s.section
            lines += ["", f"[{section}]"]
        value = values[s.name]
        if len(value) > 40:
            value = value[:37] + "..."
        origin = "" if s.origin == "derived" else f"  ({s.origin})"
        lines.append(f"  {s.name.ljust(width)}  {value.ljust(vwidth)}  {s.note}{origin}")
    if plan.formulas:
        lines += ["", "[computed by train.py once the data is loaded]"]
        for f in plan.formulas:
            lines.append(f"  {f.name.ljust(width)}  {f.expr}  ({f.note})")
    lines += ["", "[summary]"]
    steps = plan.get("max_steps")
    per_step = plan["tokens_per_step"]
    accum = plan["grad_accum_steps"]
    per_rank = plan["micro_batch_size"] * accum * plan["seq_len"]
    if plan.launch.mesh:  # the ranks of one tp/cp/sp group see the same samples
        dp = plan.get("data_parallel_size", plan["num_processes"])
        split = plan["cp_size"] * plan["sp_size"]
        lines.append(
            f"  effective batch  {plan['batch_size']} sequences = {per_step:,} tokens per optimizer step "
            f"(micro_batch_size {plan['micro_batch_size']} x grad_accum_steps {accum} x {dp} data-parallel rank"
            f"{'s' if dp > 1 else ''} of {plan['num_processes']} processes)"
        )
        per_process = f"{per_rank // split:,} per process (seq_len {plan['seq_len']} / {split} along the sequence)" if split > 1 else ""
        lines.append(
            f"  tokens per step  {per_step:,} in total = {per_rank:,} per data-parallel rank x {dp} "
            f"(micro_batch_size {plan['micro_batch_size']} x grad_accum_steps {accum} x seq_len {plan['seq_len']})"
            + (f"; {per_process}" if per_process else "")
        )
    else:
        lines.append(
            f"  effective batch  {plan['batch_size']} sequences = {per_step:,} tokens per optimizer step "
            f"(micro_batch_size {plan['micro_batch_size']} x grad_accum_steps {accum} x {plan['num_processes']} process"
            f"{'es' if plan['num_processes'] > 1 else ''})"
        )
        ranks = plan["num_processes"]
        lines.append(
            f"  tokens per step  {per_step:,} in total = {per_rank:,} per rank x {ranks} rank{'s' if ranks > 1 else ''} "
            f"(per rank: micro_batch_size {plan['micro_batch_size']} x grad_accum_steps {accum} x seq_len {plan['seq_len']})"
        )
    lines.append(f"  launch shape     {_launch_shape(plan)}")
    if plan.launch.mesh:
        first, *dims = plan.launch.mesh
        lines.append(f"  device mesh      {first}")
        lines += [f"                 {line}" for line in dims]
    if steps is not None:
        lines.append(f"  optimizer steps  {steps:,}")
        lines.append(f"  total tokens     {steps * per_step:,}")
        lines.append(f"  peak LR          {plan['lr']:g}")
        lines.append(f"  schedule         {describe(plan['schedule_phases'])}")
    else:
        lines.append("  optimizer steps  derived by train.py from the data (train.epochs); --data computes them")
    lines += _optimizer_summary(plan)
    lines += _data_summary(plan)
    lines.append(f"  launch           {plan.launch_command}")
    if plan["num_machines"] > 1:
        lines.append(f"  on SLURM         sbatch {plan.build_dir.rstrip('/')}/slurm.sbatch  (from this directory)")
    return "\n".join(lines + _memory_lines(plan))


def _override_notes(recipe: Path, overrides: tuple[str, ...], build_dir: Path | None, plan: Any) -> list[str]:
    """Review notes on what the --set overrides change: total tokens moved at the same peak
    LR (`recipec.diff.token_horizon`). None without overrides, or when the recipe as written
    does not plan."""
    if not overrides:
        return []
    from .compiler import plan_recipe
    from .diff import token_horizon

    try:
        written, _ = plan_recipe(recipe, (), build_dir)
    except RecipeError:
        return []
    horizon = token_horizon(written, plan)
    return [] if horizon is None else [f"--set against the recipe as written: {horizon}"]


def _optimizer_summary(plan: Any) -> list[str]:
    """The optimizer's split of the parameters: Muon's two sides, and the parameter groups
    (their counts need the model: `recipec check` prints them, as the script logs them)."""
    lines = []
    if plan["optimizer_name"] == "muon":
        lines.append(
            f"  optimizer        Muon (lr {plan['lr']:g}) on the 2-D matrices of the hidden layers; AdamW "
            f"(adamw_lr {plan['adamw_lr']:g}) on the embeddings, the output layer, norms and biases"
        )
    decay = plan.get("param_decay", "matrices")
    rule = {"matrices": "matrices and embeddings (2-D and up)", "all": "every parameter"}.get(decay) if isinstance(decay, str) else (
        f"names matching {', '.join(decay['include'])}" + (f" but not {', '.join(decay['exclude'])}" if decay.get("exclude") else "")
    )
    lines.append(f"  weight decay     {plan['weight_decay']:g} on {rule}")
    for i, group in enumerate(plan.get("param_groups") or []):
        wd = "" if group["weight_decay"] is None else f", weight decay {group['weight_decay']:g}"
        lines.append(f"  param group {i}    {', '.join(group['params'])}: lr x{group['lr_scale']:g}{wd}")
    if plan.get("param_groups") or plan["optimizer_name"] == "muon":
        lines.append("  (parameter counts per group: recipec check, as train.py logs them)")
    return lines


def _memory_lines(plan: Any) -> list[str]:
    """The peak-memory estimate per device, part by part with its formula."""
    from .memory import human

    m = plan.memory
    if m is None:
        return ["", "[peak memory per device]", f"  not estimated: {plan.memory_unknown}"]
    lines = ["", "[peak memory per device, estimated (recipec/memory.py)]"]
    if plan.model_config_source is not None:
        lines.append(f"  {'config'.ljust(12)} {'':>11}  {plan.model_config_source}")
    parts = ("params", "grads", "optimizer", "activations", "logits")
    by_part = {note.split(": ", 1)[0]: note.split(": ", 1)[1] for note in m.notes if note.split(": ", 1)[0] in parts}
    for part in parts:
        lines.append(f"  {part.ljust(12)} {human(getattr(m, part)).rjust(11)}  {by_part.get(part, '')}".rstrip())
    devices = f", {human(m.total)} over {m.devices} devices" if m.devices > 1 else ""
    lines.append(f"  {'peak'.ljust(12)} {human(m.per_device).rjust(11)}  per device{devices}")
    by_eval = next((note.split(": ", 1)[1] for note in m.notes if note.startswith("evaluation: ")), None)
    if by_eval is not None:
        peak = human(m.evaluation) if m.evaluation is not None else "-"
        lines.append(f"  {'evaluation'.ljust(12)} {peak.rjust(11)}  {by_eval}")
    lines += [f"  note: {note}" for note in m.notes if note.split(": ", 1)[0] not in (*parts, "evaluation")]  # e.g. preference pairs' length
    return lines


def _launch_shape(plan: Any) -> str:
    """Machines x processes per machine, the strategy and its main options, the device."""
    machines, processes = plan["num_machines"], plan["num_processes"]
    per_machine = processes // machines
    shape = (
        f"{machines} machine{'s' if machines > 1 else ''} x {per_machine} process{'es' if per_machine > 1 else ''}, "
        f"{plan['strategy']}"
    )
    if plan["strategy"] == "fsdp":
        how = "torch's fully_shard" if plan["cpu"] else f"version {plan['fsdp_version']}"
        shape += f" ({how}, {plan['fsdp_sharding_strategy']}"
        shape += ", cpu offload)" if plan["fsdp_cpu_offload"] else ")"
    elif plan["strategy"] == "deepspeed":
        shape += f" (ZeRO stage {plan['deepspeed_zero_stage']}"
        for what in ("optimizer", "params"):
            device = plan[f"deepspeed_offload_{what}"]
            if device != "none":
                shape += f", {what} offloaded to {device}"
        shape += ")"
    if plan["mixed_precision"] != "no":
        shape += f", {plan['mixed_precision']} mixed precision"
    return shape + (", on CPU" if plan["cpu"] else "")


def _data_summary(plan: Any) -> list[str]:
    """The filter chain and each mixture, in words."""
    sources = plan["sources"]
    labels = [src.get("name") or f"sources[{i}]" for i, src in enumerate(sources)]
    chain = [f"{label}: {', '.join(f['type'] for f in src['filters'])}" for label, src in zip(labels, sources) if src["filters"]]
    if plan["filters"]:
        chain.append("then every source: " + ", ".join(f["type"] for f in plan["filters"]))
    lines = [f"  data filters     {'; '.join(chain) if chain else 'none'}"]
    for seg in plan.get("segments") or []:
        where = "whole run"
        if len(plan["segments"]) > 1:
            end = "end" if seg["last_step"] is None else seg["last_step"]
            where = f"steps {seg['first_step']}-{end} ({', '.join(seg['phases'])})"
        if seg["weights"] is None:
            shares = ", ".join(labels[i] for i in seg["sources"])
            how = f"natural shares (each document once){'' if plan['temperature'] is None else ', temperature ' + str(plan['temperature'])}"
        else:
            total = sum(seg["weights"])
            shares = ", ".join(f"{labels[i]} {w / total:.2f}" for i, w in zip(seg["sources"], seg["weights"]))
            how = f"token shares, on_exhausted {plan['on_exhausted']}"
        lines.append(f"  mixture          {where}: {shares}  [{how}]")
    return lines


@main.command(short_help="Write the build directory: train.py, config, lock.")
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("-o", "--output", "build_dir", type=click.Path(path_type=Path), help="Build directory (default build/<name>).")
@click.option("--force", is_flag=True, help="Overwrite generated files of the earlier build that were edited by hand.")
def build(recipe: Path, overrides: tuple[str, ...], build_dir: Path | None, force: bool) -> None:
    """Compile RECIPE into a build directory: train.py, accelerate_config.yaml, launch.sh,
    resolved.toml, the runtime package and recipe.lock.json.

    A rebuild refuses to overwrite a generated file that was edited by hand (it names each
    one) unless --force is given."""
    written, _, _ = _build(recipe, overrides, build_dir, force=force)
    click.echo(f"built {written.dir.as_posix()}/ (lock {written.lock_sha256[:12]})")
    click.echo(f"  {written.train_py.as_posix()}")
    click.echo(f"train with:\n  {_plan_launch(written)}")


def _build(recipe: Path, overrides: Sequence[str], build_dir: Path | None, force: bool = False) -> Any:
    """plan + write, reporting the recipe's errors (exit 2) and warnings; (build, plan, source)."""
    from .compiler import build_plan, plan_recipe

    try:
        plan, source = plan_recipe(recipe, overrides, build_dir)
        written = build_plan(plan, source, force=force)
    except RecipeError as exc:
        report.fail(exc)
    report.diagnostics(plan.warnings)
    return written, plan, source


def _plan_launch(written: Any) -> str:
    d = written.dir.as_posix()
    return f"accelerate launch --config_file {d}/accelerate_config.yaml {d}/train.py"


@main.command(short_help="Preflight: check the recipe against the model (imports torch).")
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
def check(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Check what only the model can tell: PEFT target modules exist, and how many
    parameters train. The model is instantiated on the meta device from its config (no
    weights, no download); `recipec run` runs this before launching.
    Exit status: 0 success, 2 a mistake in the recipe (a local model that does not load
    included), 1 a local tokenizer that does not load."""
    from .compiler import plan_recipe

    try:
        plan, source = plan_recipe(recipe, overrides)
    except RecipeError as exc:
        report.fail(exc)
    report.diagnostics(plan.warnings)
    _preflight(plan, source)
    click.echo(visible_text(f"ok: {recipe.as_posix()} ({plan.name})"))


def _preflight(plan: Any, source: Any) -> None:
    """Run `check` on a plan; exit 2 with its problems."""
    from .check import check as check_plan
    from .diagnostics import Diagnostic
    from .runtime.readers import DataError

    try:
        found = check_plan(plan, source=source)
    except DataError as exc:  # a local tokenizer that does not load: bad data, as in `recipec data`
        report.fail(str(exc), report.EXIT_FAILED)
    except RecipeError as exc:  # a local model that does not load, at its recipe key
        report.fail(exc)
    for line in found.lines():
        report.info(line)
    if found.problems:
        report.fail(RecipeError([Diagnostic("error", problem) for problem in found.problems]))


@main.command(short_help="Run the data stage: read, filter, dedup, tokenize, pack; print the report.")
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("--num-proc", type=click.IntRange(min=0), default=None, help="Processes (default: data.num_proc; 0: every core).")
@click.option("--force", is_flag=True, help="Rebuild the cache entry even if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (data_report.json) as JSON instead of a table.")
def data(recipe: Path, overrides: tuple[str, ...], num_proc: int | None, force: bool, as_json: bool) -> None:
    """Run RECIPE's data stage into its cache (data.cache_dir), as the training script
    would, and print the report: per source and per filter the documents kept and
    dropped (with examples in data_report.json), and each mixture's realised shares.

    The entry is keyed on the sources' content, the filter settings, the tokenizer and
    seq_len; an existing entry is reused (the training script then starts at once).
    Exit status: 0 success, 2 a mistake in the recipe, 1 bad data."""
    from .compiler import plan_recipe

    try:
        plan, _ = plan_recipe(recipe, overrides)
    except RecipeError as exc:
        report.fail(exc)
    report.diagnostics(plan.warnings)
    from .data_figures import run_stage
    from .runtime import stage
    from .runtime.readers import DataError

    try:
        out = run_stage(plan, log=report.info, num_proc=num_proc, force=force)
    except DataError as exc:
        report.fail(str(exc), report.EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(out.report, indent=2))
    else:
        click.echo(stage.format_report(out.report))
        click.echo(f"report: {(out.dir / 'data_report.json').as_posix()}")


@main.command(short_help="Build, then train with accelerate launch.")
@click.argument("recipe", type=click.Path(path_type=Path))
@_set_option
@click.option("-o", "--output", "build_dir", type=click.Path(path_type=Path), help="Build directory (default build/<name>).")
@click.option(
    "--allow-changed",
    is_flag=True,
    help="Resume from a checkpoint that another build (a different lock) wrote; without it such a resume stops and shows the diff.",
)
def run(recipe: Path, overrides: tuple[str, ...], build_dir: Path | None, allow_changed: bool) -> None:
    """Build RECIPE, then train it with `accelerate launch`; exits with the training's exit code.

    The build directory stays behind whatever happens, and its train.py is printed, so a
    failed run can be read and rerun by hand.
    """
    from .launch import MissingTrainingExtra, launch

    written, plan, source = _build(recipe, overrides, build_dir)
    if plan["num_machines"] > 1:
        report.fail(
            f"recipec run starts one machine, and launch.num_machines is {plan['num_machines']}: "
            f"submit {written.dir.as_posix()}/slurm.sbatch with sbatch, or run "
            f"{written.dir.as_posix()}/launch.sh on every machine (with MACHINE_RANK and MASTER_ADDR set)"
        )
    if plan.recipe.peft is not None:
        _preflight(plan, source)
    report.info(f"built {written.dir.as_posix()}/ -> {_plan_launch(written)}")
    for var in click.get_current_context().meta.get("recipec.compile_env", ()):
        os.environ.pop(var, None)  # the training's own pydantic plugins, if any, stay on
    try:
        code = launch(written.dir, ("--allow-changed",) if allow_changed else ())
    except MissingTrainingExtra as exc:
        report.error(str(exc))
        code = report.EXIT_FAILED
    except KeyboardInterrupt:
        code = report.EXIT_INTERRUPTED
    status = "finished" if code == 0 else f"failed (exit {code})"
    report.info(f"training {status}; script: {written.train_py.as_posix()}")
    sys.exit(code)


@main.command("import", short_help="Turn an axolotl, LLaMA-Factory, torchtune, LitGPT, llm-foundry or Ludwig config into a recipe.")
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "--from",
    "tool",
    required=True,
    type=click.Choice(["axolotl", "llama-factory", "torchtune", "litgpt", "llm-foundry", "ludwig", "transformers"]),
    help="The tool the config is for (transformers: a TrainingArguments saved as JSON).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Recipe to write (default recipes/<config name>.toml; - prints it).")
@click.option("--name", help="recipe.name (default: the config's file name without its extension).")
@click.option(
    "--num-processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes (GPUs) the source run used: its global batch is micro batch * accumulation * processes.",
)
@click.option("--model", help="The model, for a config that names none (TrainingArguments): a hub id or local directory.")
@click.option("--data", help="The data, for a config that names none (TrainingArguments, Ludwig): a hub dataset id or local file.")
@click.option("--force", is_flag=True, help="Overwrite an existing recipe.")
def import_(
    config: Path,
    tool: str,
    output: Path | None,
    name: str | None,
    num_processes: int,
    model: str | None,
    data: str | None,
    force: bool,
) -> None:
    """Write a recipe from another tool's CONFIG, key by key.

    Every key of the config is mapped exactly, mapped approximately, or listed in the
    recipe's header as not imported, with the reason. The tool's defaults for what the
    config leaves out are written and marked, each recipe line names the config keys it
    came from, and contradictions in the config are warnings. Then the recipe is validated.

    Exit status: 0 every key mapped and the recipe valid; 1 some keys not imported, or the
    recipe does not validate here (a local data file missing); 2 a config that cannot be
    imported (not YAML or JSON, another tool's, a key the tool does not know).
    """
    from .diagnostics import Diagnostic
    from .importers import Options, at_the_source, import_config, recipe_name

    name = name or recipe_name(config)
    try:
        from .schema import RecipeTable

        RecipeTable(name=name)
    except Exception:
        raise click.BadParameter(f"{name!r} is not a valid recipe.name: use letters, digits, '.', '_' and '-'", param_hint="--name") from None
    out = output if output is not None else Path("recipes") / f"{name}.toml"
    if str(out) != "-" and out.exists() and not force:
        raise click.ClickException(f"{out.as_posix()} exists; pass --force to overwrite it")
    try:
        result = import_config(config, tool, Options(name=name, num_processes=num_processes, model=model, data=data))
    except RecipeError as exc:
        report.fail(exc)
    draft = result.draft
    report.diagnostics(
        [Diagnostic("warning", msg, draft.config.location(keys[0]) if keys else None) for msg, keys in draft.warnings]
    )
    c = draft.counts()
    total = sum(c.values())
    if str(out) == "-":
        click.echo(result.text, nl=False)
        report.info(f"{total} keys of {draft.config.path} ({tool}): {c['exact']} mapped exactly, {c['approx']} approximately, {c['dropped']} not imported")
        sys.exit(report.EXIT_OK if c["dropped"] == 0 else report.EXIT_FAILED)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.text, encoding="utf-8")
    report.info(
        f"{total} keys of {draft.config.path} ({tool}): {c['exact']} mapped exactly, {c['approx']} approximately, "
        f"{c['dropped']} not imported" + (f" (listed in the header of {out.as_posix()})" if c["dropped"] else "")
    )
    for n in draft.notes:
        report.info(f"note: {n}")
    from .compiler import plan_recipe

    valid = True
    try:
        plan, _ = plan_recipe(out, ())
    except RecipeError as exc:
        report.diagnostics(at_the_source(exc.diagnostics, draft, out.as_posix()))
        report.info(f"{out.as_posix()} does not validate here; fix what is listed above")
        valid = False
    click.echo(f"wrote {out.as_posix()}")
    if valid:
        click.echo(f"next: recipec explain {out.as_posix()}")
    sys.exit(report.EXIT_OK if valid and c["dropped"] == 0 else report.EXIT_FAILED)


@main.command(short_help="Write the JSON Schema and the key reference.")
@click.option(
    "--output", "schema_path", type=click.Path(path_type=Path), default="schemas/recipe.schema.json", show_default=True
)
@click.option("--reference", "reference_path", type=click.Path(path_type=Path), default="docs/reference.md", show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if either file is stale instead of writing it.")
def schema(schema_path: Path, reference_path: Path, check: bool) -> None:
    """Write the recipe's JSON Schema and the key reference generated from it."""
    from .reference import json_schema_text, reference_markdown

    stale = []
    for path, text in ((schema_path, json_schema_text()), (reference_path, reference_markdown())):
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path.as_posix()}")
    if stale:
        report.info(f"stale: {', '.join(p.as_posix() for p in stale)}; run `recipec schema` to regenerate")
        sys.exit(report.EXIT_DIFFERENT)

if __name__ == "__main__":
    main()
