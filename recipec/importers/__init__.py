"""`recipec import`: another tool's training config as a commented recipe.

One module per tool. Each has:

- ``VERSION``: the tool version whose defaults are applied ("axolotl 0.12.2");
- ``KNOWN``: patterns (fnmatch, ``[*]`` for any list index) of every key the tool accepts;
  a key matching none is an error, as the tool would refuse it or drop a typo;
- ``MARKERS``: keys that only this tool's configs have, to tell a config of another tool;
- ``LEGACY`` (optional): keys of the tool's older releases and what the tool does with them
  today (:class:`~recipec.importers.core.Renamed`, :class:`~recipec.importers.core.Removed`);
- ``LEGACY_VALUES`` (optional): values of the tool's older releases for keys that kept their
  names, and how the tool reads each today or that it refuses it
  (:class:`~recipec.importers.core.OldValue`);
- ``convert(draft, options)``: fills the :class:`~recipec.importers.core.Draft`.

:func:`import_config` runs one: read, detect, check the keys, convert, and account for
every key of the file. The compiler side: nothing here imports torch or transformers.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from ..diagnostics import Diagnostic, Location, RecipeError, sort_diagnostics
from .core import Config, Draft, _pop, migrate, read_config, recipe_lines, restore_names, unknown_key_error, write_recipe

TOOLS: dict[str, str] = {
    "axolotl": "axolotl",
    "llama-factory": "llama_factory",
    "torchtune": "torchtune",
    "litgpt": "litgpt",
    "llm-foundry": "llm_foundry",
    "ludwig": "ludwig",
    "transformers": "hf_trainer",
}
"""`--from` names and their modules. `transformers` is a `TrainingArguments` saved as JSON
(`training_args.to_json_string()`, or the `args` a Trainer run writes). `ludwig` is a Ludwig
LLM fine-tuning config (`model_type: llm`)."""


@dataclass(frozen=True)
class Options:
    """What the file cannot say but the recipe needs."""

    name: str
    """recipe.name."""
    num_processes: int = 1
    """Processes the source run used (its global batch counts them)."""
    model: str | None = None
    """The model, for configs that do not name one (a `TrainingArguments`)."""
    data: str | None = None
    """The data, for configs that do not name it: a hub dataset id or a local file."""


@dataclass
class Result:
    draft: Draft
    text: str


def tool_module(tool: str) -> ModuleType:
    return importlib.import_module(f".{TOOLS[tool]}", __name__)


def detect(config: Config) -> dict[str, list[str]]:
    """For each tool, the marker keys of the config that only that tool uses."""
    found: dict[str, list[str]] = {}
    leaves = config.leaves()
    top = set(config.data)
    for tool in TOOLS:
        if importlib.util.find_spec(f"{__name__}.{TOOLS[tool]}") is None:
            continue
        markers = getattr(tool_module(tool), "MARKERS", ())
        hits = [m for m in markers if m in top or m in leaves or any(_under(k, m) for k in leaves)]
        if hits:
            found[tool] = hits
    return found


def _under(key: str, marker: str) -> bool:
    if marker.startswith("="):  # a value marker: "=key=value"
        return False
    return key.startswith(marker + ".") or key.startswith(marker + "[")


def recipe_name(path: str | Path) -> str:
    """A valid recipe.name from a file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "imported"
    return name[:64]


def import_config(path: str | Path, tool: str, options: Options | None = None) -> Result:
    """Import one config; raises RecipeError for input that cannot be imported."""
    if tool not in TOOLS:
        raise RecipeError([Diagnostic("error", f"unknown tool `{tool}`; one of {', '.join(TOOLS)}")])
    config = read_config(path)
    options = options or Options(name=recipe_name(path))
    found = detect(config)
    if tool not in found:
        others = {t: keys for t, keys in found.items() if len(keys) >= 2}
        if others:
            best = max(others, key=lambda t: len(others[t]))
            keys = ", ".join(f"`{k}`" for k in others[best][:4])
            raise RecipeError(
                [
                    Diagnostic(
                        "error",
                        f"{config.path} looks like a {best} config ({keys}), not {tool}",
                        Location(config.path, 0, 1, 1, ""),
                        help=f"recipec import {config.path} --from {best}",
                    )
                ]
            )
    drafts: list[Draft] = []
    try:
        draft = _convert(config, tool, options, found, drafts)
        text = write_recipe(draft)
    except RecipeError:
        raise
    except Exception as exc:  # a value the converter cannot read: named at its line, never a traceback
        raise unreadable_value(config, tool, options, found, exc, drafts[0] if drafts else None) from None
    return Result(draft, text)


def _convert(config: Config, tool: str, options: Options, found: dict[str, list[str]], drafts: list[Draft] | None = None) -> Draft:
    """Check the config's keys and convert it: the draft, or a RecipeError listing every problem.
    The draft goes into `drafts` as soon as it exists, for a caller that wants it when converting fails."""
    module = tool_module(tool)
    draft = Draft(config, tool, module.VERSION, tuple(module.KNOWN))
    if drafts is not None:
        drafts.append(draft)
    legacy = getattr(module, "LEGACY", {})
    errors = migrate(draft, legacy, getattr(module, "LEGACY_VALUES", {}))
    unknown = draft.unknown_keys()
    if unknown:
        errors += unknown_key_error(draft, unknown).diagnostics
        # keys this tool lacks, and another tool's markers outnumber this one's: most likely the wrong --from
        rivals = {t: keys for t, keys in found.items() if t != tool and len(keys) > len(found.get(tool, []))}
        if rivals:
            best = max(rivals, key=lambda t: len(rivals[t]))
            keys = ", ".join(f"`{k}`" for k in rivals[best][:4])
            errors.append(
                Diagnostic(
                    "error",
                    f"{config.path} looks more like a config for {best} ({keys}) than for {tool}",
                    Location(config.path, 0, 1, 1, ""),
                    help=f"recipec import {config.path} --from {best}",
                )
            )
    if errors:
        raise RecipeError(sort_diagnostics(errors))
    draft.set("recipe.name", options.name)
    draft.tables["recipe"]["name"].note = f"from the file name {Path(config.path).name}"
    module.convert(draft, options)
    for key in draft.pending():
        draft.drop(key, "no-equivalent", "recipec import does not map this key.")
    restore_names(draft, legacy)
    return draft


def at_the_source(diagnostics: list[Diagnostic], draft: Draft, written: str) -> list[Diagnostic]:
    """The written recipe's problems, each that is on a line whose value came from the config
    moved to the config key's line (the first key, when several made the value), the recipe's
    line named in its help: the value to fix is the config's."""
    sources = recipe_lines(draft)
    out = []
    for diag in diagnostics:
        loc = diag.location
        keys = sources[loc.line - 1][1] if loc is not None and loc.file == written and 0 < loc.line <= len(sources) else ()
        if not keys:
            out.append(diag)
            continue
        names = ", ".join(f"`{k}`" for k in keys)
        said = f"written to {written}:{loc.line} as `{sources[loc.line - 1][0].split('  #', 1)[0].strip()}`"
        out.append(
            Diagnostic(
                diag.severity,
                f"{diag.message} (imported from {names})",
                draft.config.location(keys[0]),
                help=f"{diag.help}; {said}" if diag.help else said,
            )
        )
    return out


# -- a value the converter fails on --------------------------------------------------------

#: Failures that mean a number was wanted: int()/float()/Fraction() of a value that is not
#: one, or arithmetic and comparisons with it
_NOT_A_NUMBER = re.compile(
    r"invalid literal for int\(\)|could not convert string to float|\(\) argument must be a string"
    r"|Invalid literal for Fraction|argument should be a string or a Rational|not supported between instances of"
    r"|unsupported operand type|must be real number|can't multiply sequence|bad operand type"
)


def unreadable_value(
    config: Config, tool: str, options: Options, found: dict[str, list[str]], exc: Exception, draft: Draft | None
) -> RecipeError:
    """The error for the values the converter fails on, `exc` the first failure (any exception but
    a RecipeError).

    The key to blame is found by trial, not guessed: the config is converted again without one
    of its leaf keys at a time, and a key whose removal ends that failure is the one named, at
    its line (:func:`_blame` says which, when several do). Without it, the next failure is looked for the
    same way, so that every such value is listed at once. When no single key ends a failure, the
    error names the file and the failure: a bug in recipec's importer that no edit of one value
    fixes.
    """
    leaves = config.leaves()
    data = copy.deepcopy(config.data)
    blamed: list[tuple[str, Exception]] = []
    failure: Exception | None = exc
    unblamed: Exception | None = None
    while failure is not None and len(blamed) < 20:
        key, after, draft = _blame(config, data, tool, options, found, failure, draft)
        if key is None:
            unblamed = failure
            break
        blamed.append((key, failure))
        _pop(data, key)
        failure = after
    diagnostics = []
    for key, why in blamed:
        value = leaves[key]
        if _NOT_A_NUMBER.search(str(why)) and isinstance(value, str) and "${" in value:
            message = f"`{key}` must be a number: `{value}` is not one"
        elif _NOT_A_NUMBER.search(str(why)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            message = f"`{key}` must be a number, not {_shown(value)}"
        else:
            message = f"`{key}` cannot be {_shown(value)}: recipec's {tool} importer fails on it ({type(why).__name__}: {why})"
        diagnostics.append(Diagnostic("error", message, config.location(key)))
    if unblamed is not None:
        diagnostics.append(
            Diagnostic(
                "error",
                f"recipec cannot import {config.path}: {type(unblamed).__name__}: {unblamed}",
                Location(config.path, 0, 1, 1, ""),
                help=f"no single key of the file causes this: a bug of recipec's {tool} importer; please report it with the file",
            )
        )
    return RecipeError(diagnostics)


def _blame(
    config: Config, data: dict[str, Any], tool: str, options: Options, found: dict[str, list[str]], exc: Exception, draft: Draft | None
) -> tuple[str | None, Exception | None, Draft | None]:
    """The leaf key of `data` without which converting no longer fails as `exc` did, and the next
    failure without it (None when it converts or stops at a RecipeError) with its draft.

    The keys are tried from the most evidence to the least (:func:`_suspects`). A key whose value
    the failure quotes is taken as soon as its removal ends the failure. Among keys with the same
    lesser evidence, one without which the config converts (or fails further on) is taken before
    one without which it stops at a RecipeError: removing a key the failing line did not need can
    stop the conversion before that line (a reference to it left dangling), and that is no
    evidence."""
    site = _failure_site(exc)
    refused: str | None = None
    level = None
    for key, evidence in _suspects(Config(config.path, config.text, data, config.lines), draft, exc):
        if evidence != level:
            if refused is not None:  # the best a level with more evidence had
                return refused, None, None
            level = evidence
        trial = copy.deepcopy(data)
        _pop(trial, key)
        drafts: list[Draft] = []
        try:
            write_recipe(_convert(Config(config.path, config.text, trial, config.lines), tool, options, found, drafts))
        except RecipeError as refusal:
            if all(f"${{{key}}}" in d.message for d in refusal.diagnostics):
                continue  # only the references to the removed key dangle: no evidence either way
            if evidence >= 2:  # the failure quotes its value: no need for more
                return key, None, None
            refused = refused or key
            continue
        except Exception as again:
            if _failure_site(again) == site:
                continue
            return key, again, drafts[0] if drafts else None
        return key, None, None
    if refused is not None:
        return refused, None, None
    return None, exc, draft


def _tracebacks(exc: BaseException) -> tuple[list[TracebackType], list[TracebackType]]:
    """The exception's traceback entries, all of them and those in recipec's code."""
    package = str(Path(__file__).resolve().parent.parent)
    every: list[TracebackType] = []
    tb = exc.__traceback__
    while tb is not None:
        every.append(tb)
        tb = tb.tb_next
    return every, [t for t in every if str(Path(t.tb_frame.f_code.co_filename).resolve()).startswith(package)]


def _failure_site(exc: BaseException) -> tuple[str, str, int]:
    """The exception's type and the innermost line of recipec's code it went through."""
    every, ours = _tracebacks(exc)
    last = (ours or every or [None])[-1]
    return (type(exc).__name__, last.tb_frame.f_code.co_filename, last.tb_lineno) if last else (type(exc).__name__, "", 0)


def _suspects(config: Config, draft: Draft | None, exc: Exception) -> list[tuple[str, int]]:
    """The config's leaf keys in the order to try them, each with its evidence (3: a value among
    the failing lines' variables, of a type the message names; 2: a string the message quotes; 1:
    a value of a type it names; 0: none): first those the failure itself points at (a value among the failing lines' variables,
    a string the message quotes, a type it names), then those the failed conversion read last
    (old names read under new ones mapped back), then the unread ones from the end of the file."""
    leaves = config.leaves()
    names = list(leaves)
    message = str(exc)
    held = {id(v) for v in _frame_values(exc) if isinstance(v, (str, list, dict))}

    def resolved(value: Any, depth: int = 0) -> Any:
        """A whole `${key}` reference (OmegaConf's, which llm-foundry and torchtune configs use) as
        the value it refers to."""
        ref = re.fullmatch(r"\$\{\s*([^}:\s]+)\s*\}", value.strip()) if isinstance(value, str) else None
        if ref is None or ref.group(1) not in leaves or depth > 10:
            return value
        return resolved(leaves[ref.group(1)], depth + 1)

    def evidence(key: str) -> int:
        value = leaves[key]
        if isinstance(value, (str, list, dict)) and id(value) in held and _type_named(value, message):
            return 3
        value = resolved(value)
        if isinstance(value, str) and repr(value) in message:
            return 2
        return 1 if _type_named(value, message) else 0

    last: dict[str, int] = {}
    if draft is not None:
        back = dict(draft.renamed)

        def named(read: str) -> str:
            for new, old in back.items():
                if read == new or _under(read, new):
                    return old + read[len(new):]
            return read

        for i, read in enumerate(draft.reads):
            read = named(read)
            for leaf in names:
                if leaf == read or _under(leaf, read) or _under(read, leaf):
                    last[leaf] = i
    weight = {k: (evidence(k), last.get(k, -1), i) for i, k in enumerate(names)}
    return [(k, weight[k][0]) for k in sorted(names, key=lambda k: weight[k], reverse=True)]


def _type_named(value: Any, message: str) -> bool:
    """Whether the failure's message names the value's type (or quotes the string)."""
    if "can't multiply sequence by non-int" in message:  # the type it names is the other operand's
        return isinstance(value, (str, list))
    return f"'{type(value).__name__}'" in message or (isinstance(value, str) and repr(value) in message)


def _frame_values(exc: BaseException) -> list[Any]:
    """The variables of recipec's frames the exception went through."""
    return [value for tb in _tracebacks(exc)[1] for value in tb.tb_frame.f_locals.values()]


def _shown(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return repr(value)
