"""What every importer shares: the source config with its lines, the ledger of its keys, the
recipe being drafted, and the writer of the commented recipe.

An importer reads one config of another tool and fills a :class:`Draft`:

- every leaf key of the config (``datasets[0].path``, ``optimizer.lr``) ends in exactly one
  state: mapped exactly, mapped approximately (with what differs), or not imported (with
  the reason: recipec has no such setting, recipec lacks the feature, or the source tool
  itself ignores the key);
- the source tool's defaults for what the file leaves out are written too, marked with the
  tool version whose defaults they are, because the run depended on them;
- every recipe line remembers the source keys it came from, and the writer prints them
  in a trailing comment;
- contradictions inside the config are warnings, printed and written into the header.

Keys the source tool does not know are an error before anything is written: the tool
itself would have refused them (or, worse, silently ignored a typo). Keys of the tool's older
versions are treated as the tool treats them today (:func:`migrate`): an old name it still
reads is read as the new name, with a warning; a removed key it refuses is refused, saying
which release removed it and what replaced it; a removed key it drops unread is not imported.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from ..diagnostics import Diagnostic, Location, RecipeError, did_you_mean

How = Literal["exact", "approx", "dropped"]
"""A source key's state: mapped exactly, mapped approximately, or not imported."""

Reason = Literal["no-equivalent", "missing-feature", "ignored-by-tool", "not-for-training"]
"""Why a key is not imported."""

REASONS: dict[str, str] = {
    "no-equivalent": "recipec has no such setting",
    "missing-feature": "a feature recipec lacks",
    "ignored-by-tool": "ignored by the source tool itself",
    "not-for-training": "does not change what is trained (hub upload, logging, inference)",
}


class ImportError_(RecipeError):
    """A config that cannot be imported: not YAML/JSON, another tool's, unknown keys."""


# -- the source config -------------------------------------------------------------------


class _Loader(__import__("yaml").SafeLoader):  # type: ignore[misc,name-defined]
    """YAML with YAML 1.2's floats: `2e-5` is a number (PyYAML's 1.1 rules read it as a
    string; OmegaConf and pydantic, which the tools use, read a number)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _scrub_resolvers() -> None:
    # the float resolver added above must win over int for "1e5": put it first for digits
    for ch in "-+0123456789.":
        resolvers = _Loader.yaml_implicit_resolvers.get(ch, [])
        floats = [r for r in resolvers if r[0] == "tag:yaml.org,2002:float"]
        rest = [r for r in resolvers if r[0] != "tag:yaml.org,2002:float"]
        _Loader.yaml_implicit_resolvers[ch] = floats[-1:] + rest


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in _Loader.yaml_implicit_resolvers.items()}
_scrub_resolvers()


def key_name(path: Sequence[str | int]) -> str:
    """``("datasets", 0, "path")`` -> ``datasets[0].path``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Config:
    """A parsed config file: its leaf keys with their values and lines."""

    path: str
    text: str
    data: dict[str, Any]
    lines: dict[str, int]
    """Line (1-based) of every key, leaves and tables, by key name."""

    def leaves(self) -> dict[str, Any]:
        """Every leaf key by name: scalars, lists of scalars, and empty tables."""
        out: dict[str, Any] = {}

        def walk(value: Any, path: tuple[str | int, ...]) -> None:
            if isinstance(value, Mapping) and value:
                for k, v in value.items():
                    walk(v, (*path, str(k)))
            elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
                for i, v in enumerate(value):
                    walk(v, (*path, i))
            else:
                out[key_name(path)] = value

        walk(self.data, ())
        return out

    def location(self, key: str) -> Location:
        line = self.lines.get(key, 0)
        text = self.text.splitlines()[line - 1] if 0 < line <= len(self.text.splitlines()) else ""
        leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
        col = text.find(leaf) + 1 if leaf and leaf in text else 1
        return Location(self.path, line, max(col, 1), max(len(leaf), 1), text)


def _lines_of(node: Any, path: tuple[str | int, ...], out: dict[str, int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            sub = (*path, str(k.value))
            out.setdefault(key_name(sub), k.start_mark.line + 1)
            _lines_of(v, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            sub = (*path, i)
            out.setdefault(key_name(sub), v.start_mark.line + 1)
            _lines_of(v, sub, out)


def read_config(path: str | Path) -> Config:
    """Read a YAML or JSON config; a clear error when it is neither or not a table."""
    import yaml

    shown = Path(path).as_posix()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _file_error(shown, f"{shown}: no such file") from None
    except IsADirectoryError:
        raise _file_error(shown, f"{shown} is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise _file_error(shown, f"{shown} is not a text file (not UTF-8), so neither YAML nor JSON") from None
    except OSError as exc:
        raise _file_error(shown, f"cannot read {shown}: {exc.strerror}") from None
    lines: dict[str, int] = {}
    if Path(path).suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(
                [Diagnostic("error", f"{shown} is not valid JSON: {exc.msg}", _loc(shown, text, exc.lineno, exc.colno))]
            ) from None
    else:
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 1)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(
                [Diagnostic("error", f"{shown} is not valid YAML or JSON: {problem}", _loc(shown, text, line, col))]
            ) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise _file_error(shown, f"{shown} is {kind}, not a table of settings (YAML mapping or JSON object)")
    try:
        _lines_of(yaml.compose(text, Loader=_Loader), (), lines)
    except yaml.YAMLError:
        pass  # JSON that YAML 1.1 does not read: no lines, still imported
    return Config(shown, text, data, lines)


def _loc(file: str, text: str, line: int, col: int) -> Location:
    rows = text.splitlines()
    src = rows[line - 1] if 0 < line <= len(rows) else ""
    return Location(file, line, max(col, 1), 1, src)


def _file_error(file: str, message: str, help: str | None = None) -> RecipeError:
    return RecipeError([Diagnostic("error", message, Location(file, 0, 1, 1, ""), help=help)])


# -- the recipe being drafted ------------------------------------------------------------


@dataclass
class Line:
    """One `key = value` line of the recipe and where it came from."""

    value: Any
    keys: tuple[str, ...]
    """The source keys the value came from (empty for a value recipec chooses)."""
    how: Literal["exact", "approx", "default", "derived"]
    note: str = ""


@dataclass
class Entry:
    """A source key's state in the ledger."""

    how: How
    why: str = ""
    reason: Reason | None = None


@dataclass
class Draft:
    """The recipe an importer drafts, the ledger of the source keys, warnings and notes.

    Importers call :meth:`set` (a recipe key from source keys), :meth:`default` (a recipe
    key from the source tool's default for a key the file leaves out), :meth:`drop` (a
    source key not imported, with the reason) and :meth:`warn`.
    """

    config: Config
    tool: str
    """The tool as `--from` names it."""
    version: str
    """The tool version whose defaults are applied, e.g. "axolotl 0.12.2"."""
    known: Sequence[str] = ()
    """Patterns of the keys the tool knows (fnmatch, `[*]` for any list index)."""
    tables: dict[str, dict[str, Line]] = field(default_factory=dict)
    sources: list[dict[str, Line]] = field(default_factory=list)
    ledger: dict[str, Entry] = field(default_factory=dict)
    warnings: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    defaults: list[tuple[str, str]] = field(default_factory=list)
    """(source key, what its default means) for every default applied."""

    renamed: dict[str, str] = field(default_factory=dict)
    """Old keys read under their new names while converting: new key -> the file's old key."""
    original: Config | None = None
    """The file as written, while the config being converted has old keys renamed."""
    displaced: list[str] = field(default_factory=list)
    """New keys of the file that an old name set beside them overrides."""
    respelled: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    """Old values read as the tool reads them while converting: the key -> the keys and values
    it became, and the sentence naming both spellings."""
    overridden: dict[str, str] = field(default_factory=dict)
    """Keys of the file that an old value sets otherwise, and why they are ignored."""
    reads: list[str] = field(default_factory=list)
    """The keys :meth:`get` was asked for, in order (to find the value a failed conversion read last)."""

    def __post_init__(self) -> None:
        self.values = self.config.leaves()

    # reading the source
    def has(self, key: str) -> bool:
        return key in self.values or any(k.startswith(key + ".") or k.startswith(key + "[") for k in self.values)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a leaf key, or of a table (as the file has it)."""
        self.reads.append(key)
        if key in self.values:
            return self.values[key]
        node: Any = self.config.data
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
            if part.startswith("["):
                idx = int(part[1:-1])
                if not isinstance(node, list) or idx >= len(node):
                    return default
                node = node[idx]
            else:
                if not isinstance(node, Mapping) or part not in node:
                    return default
                node = node[part]
        return node

    def keys_under(self, prefix: str) -> list[str]:
        """The leaf keys at or under `prefix` (a table or list key)."""
        return [k for k in self.values if k == prefix or k.startswith(prefix + ".") or k.startswith(prefix + "[")]

    def pending(self) -> list[str]:
        """Leaf keys not yet in the ledger."""
        return [k for k in self.values if k not in self.ledger]

    # the ledger
    def _mark(self, keys: Iterable[str], how: How, why: str = "", reason: Reason | None = None) -> None:
        rank = {"exact": 0, "approx": 1, "dropped": 2}
        for key in keys:
            for leaf in self.keys_under(key) or [key]:
                if leaf not in self.values:
                    continue
                old = self.ledger.get(leaf)
                if old is None or rank[how] > rank[old.how]:
                    self.ledger[leaf] = Entry(how, why, reason)
                elif old.how == how == "approx" and why and why not in old.why:
                    old.why = f"{old.why}; {why}" if old.why else why

    def exact(self, *keys: str) -> None:
        """Mark keys as mapped exactly without writing a line (their meaning is already in
        another line, or is recipec's behaviour too)."""
        self._mark(keys, "exact")

    def approx(self, why: str, *keys: str) -> None:
        """Mark keys as mapped approximately without writing a line."""
        self._mark(keys, "approx", why)

    def drop(self, key: str, reason: Reason, why: str) -> None:
        """Not imported: `reason` is the kind, `why` the sentence shown in the header.

        A setting the file turns off (null, false, an empty list, "no", "none") for something recipec
        does not do either is mapped exactly: the run and the recipe agree. A key the source
        tool ignores stays not imported whatever its value."""
        for leaf in self.keys_under(key) or [key]:
            if reason != "ignored-by-tool" and _off(self.values.get(leaf)):
                self._mark([leaf], "exact")
            else:
                self._mark([leaf], "dropped", why, reason)

    def _table(self, target: str) -> tuple[dict[str, Line], str]:
        table, _, name = target.rpartition(".")
        m = re.fullmatch(r"data\.sources\[(\d+)\](?:\.(.+))?", table)
        if m:
            idx = int(m.group(1))
            while len(self.sources) <= idx:
                self.sources.append({})
            if m.group(2):  # a sub-table of a source (hub), kept as an inline table
                src = self.sources[idx]
                sub = m.group(2)
                line = src.get(sub)
                if line is None:
                    line = src[sub] = Line({}, (), "exact")
                return line.value, name
            return self.sources[idx], name
        return self.tables.setdefault(table, {}), name

    def set(self, target: str, value: Any, *keys: str, approx: str | None = None, note: str = "") -> None:
        """Write `target = value` from the source `keys`; exact unless `approx` says what differs."""
        table, name = self._table(target)
        how: Literal["exact", "approx", "default", "derived"] = "approx" if approx else ("exact" if keys else "derived")
        table[name] = Line(value, tuple(keys), how, approx or note)
        if keys:
            self._mark(keys, "approx" if approx else "exact", approx or "")

    def default(self, target: str, value: Any, key: str, meaning: str = "") -> None:
        """Write `target = value` because the file leaves `key` out and the tool's default
        for it is what the run used."""
        table, name = self._table(target)
        table[name] = Line(value, (key,), "default", meaning)
        entry = (key, meaning or f"{target} = {_toml(value)}")
        if entry not in self.defaults:
            self.defaults.append(entry)

    def unset(self, target: str) -> None:
        table, name = self._table(target)
        table.pop(name, None)

    def value(self, target: str, default: Any = None) -> Any:
        table, name = self._table(target)
        line = table.get(name)
        return default if line is None else line.value

    def warn(self, message: str, *keys: str) -> None:
        self.warnings.append((message, tuple(keys)))

    def note(self, message: str) -> None:
        self.notes.append(message)

    # checks
    def unknown_keys(self) -> list[str]:
        """Keys that match none of the tool's known key patterns: for a table the tool does
        not know at all, the table's key once, not each of its leaves."""
        if not self.known:
            return []
        pats = [_pattern(p) for p in self.known]
        prefixes = [[_pattern(q) for q in _parts(p)] for p in self.known]
        out: list[str] = []
        for key in self.values:
            if key in self.ledger:  # an old key of the tool's, settled by migrate()
                continue
            generic = re.sub(r"\[\d+\]", "[*]", key)
            if any(fnmatchcase(generic, p) or fnmatchcase(key, p) for p in pats):
                continue
            parts = _parts(key)
            shown = key
            for n in range(1, len(parts)):  # the shortest prefix no known key starts with
                head = [re.sub(r"^\[\d+\]$", "[*]", x) for x in parts[:n]]
                if not any(len(p) >= n and all(fnmatchcase(h, q) for h, q in zip(head, p)) for p in prefixes):
                    shown = _join(parts[:n])
                    break
            if shown not in out:
                out.append(shown)
        return out

    def counts(self) -> dict[str, int]:
        c = {"exact": 0, "approx": 0, "dropped": 0}
        for e in self.ledger.values():
            c[e.how] += 1
        return c


def _off(value: Any) -> bool:
    # not an empty table: `callbacks: {lr_monitor: {}}` turns a callback on with its defaults
    return value is None or value is False or value in ("", "no", "none", "None") or value == []


def _parts(key: str) -> list[str]:
    return re.findall(r"\[[^\]]*\]|[^.\[]+", key)


def _join(parts: Sequence[str]) -> str:
    out = ""
    for p in parts:
        out += p if p.startswith("[") or not out else "." + p
    return out


def _pattern(p: str) -> str:
    # fnmatch treats [ ] as a character class: escape the list index form
    return p.replace("[*]", "[[]*[]]")


def num(value: Any) -> Any:
    """A number written as a string (`"2e-5"`, as YAML 1.1 reads it) as a number."""
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return value
        return int(f) if re.fullmatch(r"[-+]?\d+", value.strip()) else f
    return value


def epochs_cadence(epochs: Any) -> str:
    """`train.eval_every` / `save_every` in epochs, as the recipe writes it: "1 epoch", "1/4 epoch", "3/10 epoch".

    ``epochs`` is a Fraction or a number; a float is read by its shortest decimal (0.1 is 1/10).
    """
    from fractions import Fraction

    f = epochs if isinstance(epochs, Fraction) else Fraction(str(epochs))
    if f.denominator == 1:
        return f"{f.numerator} epoch{'' if f.numerator == 1 else 's'}"
    return f"{f.numerator}/{f.denominator} epoch"


# -- writing the recipe ------------------------------------------------------------------

TABLE_ORDER = [
    "recipe",
    "model",
    "model.config",
    "tokenizer",
    "data",
    "data.sources",
    "optim",
    "optim.decay",
    "schedule",
    "train",
    "loss",
    "launch",
    "launch.fsdp",
    "launch.deepspeed",
    "launch.parallelism",
    "output",
    "continual",
    "peft",
    "preference",
    "ema",
    "merge",
]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _comment(line: Line, version: str) -> str:
    src = ", ".join(line.keys)
    if line.how == "default":
        text = f"default of {version} for `{src}`, which the file leaves out"
    elif line.how == "approx":
        note = line.note if len(line.note) <= 60 or not src else "see \"Mapped approximately\" above"
        text = f"~ {src}: {note}" if src else f"~ {note}"
    elif line.how == "derived":
        text = line.note or "chosen by recipec import"
    else:
        text = src + (f" ({line.note})" if line.note else "")
    return text.replace("\n", " ")


def _plain(value: Any) -> Any:
    if isinstance(value, Line):
        return _plain(value.value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _wrap(prefix: str, text: str, width: int = 96) -> list[str]:
    words = text.split()
    out: list[str] = []
    cur = prefix
    indent = " " * len(prefix)
    for w in words:
        if len(cur) + len(w) + 1 > width and cur.strip() not in ("", prefix.strip()):
            out.append(cur.rstrip())
            cur = indent
        cur += ("" if cur.endswith(" ") or not cur.strip() else " ") + w
    out.append(cur.rstrip())
    return ["# " + o if o else "#" for o in out]


def header(draft: Draft) -> list[str]:
    c = draft.counts()
    out = [
        f"# Imported by `recipec import --from {draft.tool}` from {draft.config.path}.",
        f"# Defaults for keys the file leaves out are those of {draft.version}.",
        "# Each line's comment names the source key(s) it came from; `~` marks an approximate mapping.",
        "#",
        f"# Keys mapped exactly: {c['exact']}; approximately: {c['approx']}; not imported: {c['dropped']}.",
    ]
    if draft.warnings:
        out.append("#")
        out.append("# Warnings (contradictions and old keys in the source config):")
        for msg, _ in draft.warnings:
            out += _wrap("  - ", msg)
    dropped = [(k, e) for k, e in draft.ledger.items() if e.how == "dropped"]
    if dropped:
        out.append("#")
        out.append("# Not imported:")
        for key, e in dropped:
            shown = _short(draft.values.get(key))
            out += _wrap("  - ", f"`{key}: {shown}`: {REASONS[e.reason or 'no-equivalent']}. {e.why}")
    approx = [(k, e) for k, e in draft.ledger.items() if e.how == "approx"]
    if approx:
        out.append("#")
        out.append("# Mapped approximately:")
        for key, e in approx:
            out += _wrap("  - ", f"`{key}`: {e.why}")
    if draft.defaults:
        out.append("#")
        out.append(f"# Defaults of {draft.version} applied (the file leaves these keys out; the run used them):")
        for key, meaning in draft.defaults:
            out += _wrap("  - ", f"`{key}`: {meaning}")
    if draft.notes:
        out.append("#")
        out.append("# Notes:")
        for n in draft.notes:
            out += _wrap("  - ", n)
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def write_recipe(draft: Draft) -> str:
    """The recipe text: the header block, then each table with a comment on each line."""
    return "\n".join(text for text, _ in recipe_lines(draft)) + "\n"


def recipe_lines(draft: Draft) -> list[tuple[str, tuple[str, ...]]]:
    """The recipe's lines, each with the source keys its value came from (none for the header,
    table headers and values recipec chooses): line N of :func:`write_recipe` is item N - 1.

    A value that has no TOML form (a config's empty `key:` carried over as null) is an error at
    the config key it came from, every such value at once."""
    lines: list[tuple[str, tuple[str, ...]]] = [(text, ()) for text in header(draft)]
    tables = dict(draft.tables)
    order = [t for t in TABLE_ORDER if t in tables or (t == "data.sources" and draft.sources)]
    order += sorted(t for t in tables if t not in TABLE_ORDER)
    errors: list[Diagnostic] = []
    for table in order:
        if table == "data.sources":
            for src in draft.sources:
                lines += [("", ()), ("[[data.sources]]", ())]
                lines += _table_lines(draft, table, src, errors)
            continue
        rows = tables[table]
        if not rows:
            continue
        lines += [("", ()), (f"[{table}]", ())]
        lines += _table_lines(draft, table, rows, errors)
    if errors:
        raise ImportError_(errors)
    return lines


def _table_lines(draft: Draft, table: str, rows: Mapping[str, Line], errors: list[Diagnostic]) -> list[tuple[str, tuple[str, ...]]]:
    body = []
    for key, line in rows.items():
        if isinstance(line.value, dict) and line.keys == () and all(isinstance(v, Line) for v in line.value.values()):
            value = _plain(line.value)
            keys = tuple(dict.fromkeys(k for v in line.value.values() for k in v.keys))
            approx = [v.note for v in line.value.values() if v.how == "approx"]
            notes = [v.note for v in line.value.values() if v.how != "approx" and v.note]
            how = "approx" if approx else ("exact" if keys else "derived")
            line = Line(value, keys, how, "; ".join(approx or notes))
        try:
            text = _toml(_plain(line.value))
        except TypeError:
            if not line.keys:  # a value recipec chose: its own bug, not the config's
                raise
            target = f"`{table}.{key}`"
            what = f"empty (null), which {target} cannot be: it needs a value" if line.value is None else f"{_plain(line.value)!r}, which {target} cannot hold"
            errors.append(
                Diagnostic(
                    "error",
                    f"`{line.keys[0]}` is {what}",
                    draft.config.location(line.keys[0]),
                    help=f"give `{line.keys[0]}` a value, or delete the key",
                )
            )
            continue
        body.append((f"{_toml_key(key)} = {text}", _comment(line, draft.version), line.keys))
    width = min(max((len(b) for b, _, _ in body), default=0), 56)
    return [(f"{b:<{width}}  # {c}" if c else b, keys) for b, c, keys in body]


# -- checks on the parsed config ---------------------------------------------------------


def unknown_key_error(draft: Draft, keys: Sequence[str]) -> RecipeError:
    names = sorted({re.sub(r"\[\d+\]", "[*]", p) for p in draft.known if "*" not in p.replace("[*]", "")})
    diags = []
    for key in keys:
        generic = re.sub(r"\[\d+\]", "[*]", key)
        hint = did_you_mean(generic, names)
        diags.append(
            Diagnostic(
                "error",
                f"unknown key `{key}`: {draft.version.split(' ')[0]} has no such setting",
                draft.config.location(key),
                help=hint or f"a typo, or a key of another tool or version; is `--from {draft.tool}` right?",
            )
        )
    return RecipeError(diags)


def iter_known(groups: Mapping[str, Iterable[str]]) -> Iterator[str]:
    for names in groups.values():
        yield from names


# -- keys of the tool's older releases --------------------------------------------------


@dataclass(frozen=True)
class Renamed:
    """An old name the tool still reads: the importer reads it as the new name, as the tool
    does, and warns that it is an old name."""

    new: str
    """The key it is read as (a `[*]` takes the old key's list index)."""
    since: str
    """The release that renamed it ("axolotl 0.5.1")."""
    wins: Literal["new", "old", "differ", "error"] = "new"
    """Both names set: the tool reads the new one (`new`), the old one when it is set
    (`old`), refuses the config when they differ (`differ`) or whatever they say (`error`)."""
    value: Callable[[Any], Any] | None = None
    """The old key's value as the new key's, when the spelling of the value changed too
    (None: the old value says nothing, as the tool reads it)."""
    reads: str = ""
    """Who reads the old name so, when not the release whose defaults are applied."""


@dataclass(frozen=True)
class Removed:
    """A key of the tool's older releases that it no longer reads."""

    since: str
    """The first release without it ("LLaMA-Factory 0.8.0")."""
    by: str = ""
    """What replaced it ("`pref_beta`"); empty when nothing did."""
    refused: Literal["always", "not-null", "set"] | None = "always"
    """When the tool refuses the key: whatever its value, unless it is null, or only when it is
    set (not null, false or empty); None: never, the tool drops it unread."""


Legacy = Renamed | Removed
"""What the tool does today with a key of its older releases."""

Legacies = Mapping[str, Legacy]
"""An importer's table of old keys: key (`[*]` for any list index) -> what the tool does with it."""


def legacy_key(legacy: Legacies, key: str) -> Legacy | None:
    """The entry of `key` (`datasets[0].x` finds `datasets[*].x`)."""
    return legacy.get(key) or legacy.get(re.sub(r"\[\d+\]", "[*]", key))


# -- values of the tool's older releases -------------------------------------------------


@dataclass(frozen=True)
class OldValue:
    """A value that a key of the tool's older releases took, and that its current release reads
    otherwise or refuses (the key kept its name)."""

    old: Any
    """The old value (`True` matches only a boolean, `1` only a number), or a test of the value
    (a table where a list is wanted, a prefix)."""
    since: str
    """The first release with the change ("LLaMA-Factory 0.7.0")."""
    new: Mapping[str, Any] | None = None
    """What the tool reads it as today: the keys it sets and their values (the key itself among
    them; `[*]` takes the key's list index); None: the tool refuses it."""
    by: str = ""
    """For a refused value: what replaced it ("`flash_attn: fa2`"); empty when nothing did."""
    shown: str = ""
    """How messages name an old value that is no single value ("`tokens` as a table")."""
    reads: str = ""
    """Who reads the old value so, when not the release whose defaults are applied."""
    only: Callable[[Mapping[str, Any]], bool] | None = None
    """The configs in which the value is an old one (a dataset type that one trainer lost and
    another keeps); None: every config."""

    def matches(self, value: Any, config: Mapping[str, Any]) -> bool:
        if self.only is not None and not self.only(config):
            return False
        if callable(self.old):
            return bool(self.old(value))
        return type(value) is type(self.old) and value == self.old


OldValues = Mapping[str, tuple[OldValue, ...]]
"""An importer's table of old values: key (`[*]` for any list index) -> its old values."""


def old_value(values: OldValues, key: str, value: Any, config: Mapping[str, Any]) -> OldValue | None:
    """The entry of `key` that `value` is an old value of in `config` (the first that matches)."""
    found = values.get(key) or values.get(re.sub(r"\[\d+\]", "[*]", key)) or ()
    return next((entry for entry in found if entry.matches(value, config)), None)


def _plain_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _old_values(draft: Draft, values: OldValues, data: dict[str, Any]) -> tuple[list[Diagnostic], dict[str, tuple[dict[str, Any], str]]]:
    """Old values of the file: refused (the errors), or rewritten in `data` as the tool reads
    them (key -> the keys and values it became, and the sentence naming both spellings)."""
    errors: list[Diagnostic] = []
    respelled: dict[str, tuple[dict[str, Any], str]] = {}
    tool = draft.version.split(" ")[0]
    for key in _all_keys(draft.config.data):
        value = draft.get(key)
        entry = old_value(values, key, value, draft.config.data) if values else None
        if entry is None:
            continue
        shown = entry.shown or f"`{key}: {_plain_value(value)}`"
        if entry.new is None:
            instead = f", replaced by {entry.by}" if entry.by else ""
            draft._mark([key], "dropped", "refused", "no-equivalent")
            errors.append(
                Diagnostic(
                    "error",
                    f"{shown} was removed in {entry.since}{instead}: {draft.version} refuses it",
                    draft.config.location(key),
                    help=f"write {entry.by} instead" if entry.by else f"delete `{key}`, or give it a value {draft.version} has",
                )
            )
            continue
        new = {_with_index(k, key): v for k, v in entry.new.items()}
        said = f"{shown} is the old spelling of " + " with ".join(f"`{k}: {_plain_value(v)}`" for k, v in new.items())
        respelled[key] = (new, said)
        reads = entry.reads or f"{draft.version} still reads it as the new one"
        draft.warn(f"{said} (changed in {entry.since}); {reads}, and so does this import", key)
        for k, v in new.items():
            present, current = _lookup(data, k)
            if k != key and present and current is not None and current != v:
                draft.overridden[k] = f"{shown}, an old spelling, sets it to {_plain_value(v)}, and {tool} reads that."
                draft.warn(f"{shown} sets `{k}: {_plain_value(v)}` as {tool} reads it: the file's `{k}` is ignored", key, k)
        _pop(data, key)
        for k, v in new.items():
            _put(data, k, v)
    return errors, respelled


def _all_keys(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[str]:
    """Every key of a config, tables before the keys under them, in file order."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            sub = (*path, str(k))
            yield key_name(sub)
            yield from _all_keys(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, (Mapping, list)):
                yield from _all_keys(v, (*path, i))


def _path(key: str) -> list[str | int]:
    return [int(p[1:-1]) if p.startswith("[") else p for p in _parts(key)]


def _pop(data: Any, key: str) -> Any:
    *head, last = _path(key)
    node = data
    for p in head:
        node = node[p]
    return node.pop(last)


def _put(data: Any, key: str, value: Any) -> None:
    *head, last = _path(key)
    node = data
    for p in head:
        if isinstance(p, str) and node.get(p) is None:
            node[p] = {}
        node = node[p]
    node[last] = value


def _lookup(data: Any, key: str) -> tuple[bool, Any]:
    node = data
    for p in _path(key):
        if isinstance(p, int) and isinstance(node, list) and p < len(node):
            node = node[p]
        elif isinstance(p, str) and isinstance(node, Mapping) and p in node:
            node = node[p]
        else:
            return False, None
    return True, node


def _with_index(pattern: str, key: str) -> str:
    """`pattern`'s `[*]`s filled with `key`'s list indices, in order."""
    indices = iter(re.findall(r"\[\d+\]", key))
    return re.sub(r"\[\*\]", lambda _: next(indices, "[0]"), pattern)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "[")


def migrate(draft: Draft, legacy: Legacies, values: OldValues | None = None) -> list[Diagnostic]:
    """Treat the keys and values of the tool's older releases as the tool does today, before
    converting.

    An old value (:class:`OldValue`) the tool still reads is rewritten as it reads it, and one
    it refuses is refused. An old name the tool still reads (:class:`Renamed`) is renamed in
    the config being converted; :func:`restore_names` puts the file's names and values back
    once it is converted. A removed key (:class:`Removed`) is refused when the tool refuses it,
    else not imported, or mapped exactly when it is off (nothing is lost).

    Returns:
        The errors of the keys and values the tool refuses, each at its line.
    """
    if not legacy and not values:
        return []
    tool = draft.version.split(" ")[0]
    data = copy.deepcopy(draft.config.data)
    errors, respelled = _old_values(draft, values or {}, data)
    created: dict[str, str] = {}  # new key -> the old key renamed into it
    displaced: list[str] = []  # new keys of the file that an old one overrides
    # in the table's order, then the file's: of several old names of one key, the one the tool
    # prefers is read (axolotl's attention flags)
    rank = {pattern: i for i, pattern in enumerate(legacy)}
    keys = sorted(_all_keys(draft.config.data), key=lambda k: rank.get(k, rank.get(re.sub(r"\[\d+\]", "[*]", k), -1)))
    for key in keys:
        value = draft.get(key)
        entry = legacy_key(legacy, key)
        if entry is None or key in respelled or any(_under(key, old) for old in created.values()):
            continue
        if isinstance(entry, Removed):
            errors += _removed(draft, key, value, entry)
            continue
        new = _with_index(entry.new, key)
        mapped = entry.value(value) if entry.value is not None else value
        shown, shown_new, name = _names(key, new, entry, value)
        reads = entry.reads or f"{draft.version} still reads it as the new one"
        if mapped is None:
            draft.exact(key)  # unset: the tool reads nothing from it
            continue
        present, current = _lookup(data, new)
        if new in created:
            draft.drop(key, "ignored-by-tool", f"the old name of `{new}`, which `{created[new]}` sets already.")
            draft.warn(f"{shown} is an old {name} of {shown_new}, which `{created[new]}` sets already: it is ignored", key)
            continue
        if present and current is not None:
            same = current == mapped or (entry.wins == "old" and _off(mapped))
            if entry.wins == "error" or (entry.wins == "differ" and not same):
                draft._mark([key], "dropped", "refused", "no-equivalent")
                errors.append(
                    Diagnostic(
                        "error",
                        f"{shown} is the old {name} of {shown_new} ({entry.since}), and `{new}` is set too: {draft.version} refuses the config",
                        draft.config.location(key),
                        help=f"delete `{key}`",
                    )
                )
                continue
            if same:
                draft.exact(key)  # the same value under both names: the new one says it all
                continue
            if entry.wins == "new":
                draft.drop(key, "ignored-by-tool", f"the old name of `{new}`, which is set too and wins.")
                draft.warn(f"{shown} is the old {name} of {shown_new} ({entry.since}); both are set and {tool} reads `{new}`: `{key}` is ignored", key, new)
                continue
            displaced.append(new)
            draft.warn(f"{shown} is the old {name} of {shown_new} ({entry.since}); both are set and the old one wins ({reads}): `{new}` is ignored", key, new)
        else:
            draft.warn(f"{shown} is the old {name} of {shown_new} (renamed in {entry.since}); {reads}, and so does this import", key)
        if present:
            _pop(data, new)
        _pop(data, key)
        _put(data, new, mapped)
        created[new] = key
    draft.warnings.sort(key=lambda w: draft.config.lines.get(w[1][0], 0) if w[1] else 0)  # the file's order
    if created or respelled:
        lines = {}
        for k, line in draft.config.lines.items():
            for new, old in created.items():
                if _under(k, old):
                    k = new + k[len(old):]
                    break
            lines.setdefault(k, line)
        for old, (new, _) in respelled.items():  # the keys an old value sets are at its line
            for k in new:
                lines.setdefault(k, draft.config.lines.get(old, 0))
        draft.original = draft.config
        draft.renamed = dict(created)
        draft.respelled = respelled
        draft.config = replace(draft.config, data=data, lines=lines)
        draft.values = draft.config.leaves()
        draft.displaced = displaced
    return errors


def _names(old: str, new: str, entry: Renamed, value: Any) -> tuple[str, str, str]:
    """The two keys as a message shows them (with their values when the spelling of the
    value changed too), and "name" or "spelling"."""
    if entry.value is None:
        return f"`{old}`", f"`{new}`", "name"
    return f"`{old}: {_plain_value(value)}`", f"`{new}: {_plain_value(entry.value(value))}`", "spelling"


def _removed(draft: Draft, key: str, value: Any, entry: Removed) -> list[Diagnostic]:
    instead = f", replaced by {entry.by}" if entry.by else ""
    what = f"`{key}` was removed in {entry.since}{instead}"
    off = _off(value) or value == {}
    refused = (
        entry.refused == "always"
        or (entry.refused == "not-null" and value is not None)
        or (entry.refused == "set" and not off)
    )
    if refused:
        draft._mark([key], "dropped", "refused", "no-equivalent")
        help = f"write {entry.by} instead" if entry.by else f"delete `{key}`"
        return [Diagnostic("error", f"{what}: {draft.version} refuses it", draft.config.location(key), help=help)]
    if off:
        draft.exact(key)
        draft.warn(f"{what}: {draft.version} ignores it, and here it is off, so nothing is lost", key)
    else:
        draft.drop(key, "ignored-by-tool", f"removed in {entry.since}{instead}; {draft.version} ignores it.")
        draft.warn(f"{what}: {draft.version} ignores it, so the recipe does not have it either", key)
    return []


def restore_names(draft: Draft, legacy: Legacies) -> None:
    """Once converted, put back the file's old names and values that :func:`migrate` rewrote:
    in the ledger, on the recipe's lines (whose notes then name both) and on the warnings."""
    if draft.original is None:
        return
    pairs = list(draft.renamed.items())
    written = draft.original.leaves()
    both: dict[str, str] = {}
    for new, old in pairs:
        entry = legacy_key(legacy, old)
        if isinstance(entry, Renamed):
            a, b, name = _names(old, new, entry, written.get(old, draft.get(new)))
            both[new] = f"{a} is the old {name} of {b}"
    # the keys an old value set (itself among them) are accounted to it; a key of the file that
    # it overrode is not imported (below)
    values: list[tuple[str, str, str]] = []  # (key set, the file's key, the sentence)
    for old, (new, said) in draft.respelled.items():
        values += [(k, old, said) for k in new]

    def back(key: str) -> tuple[str, str | None]:
        """The file's name of `key`, and the sentence naming both when it was renamed or respelled."""
        for new, old in pairs:
            if _under(key, new):
                return old + key[len(new):], both.get(new)
        for new, old, said in values:
            if _under(key, new):
                return old, said
        return key, None

    draft.config = draft.original
    draft.values = draft.config.leaves()
    rank = {"exact": 0, "approx": 1, "dropped": 2}
    ledger: dict[str, Entry] = {}
    for key, entry in draft.ledger.items():
        old, said = back(key)
        if said and entry.how != "exact":
            entry = Entry(entry.how, f"{entry.why} ({said})" if entry.why else said, entry.reason)
        have = ledger.get(old)
        if have is None or rank[entry.how] > rank[have.how]:
            ledger[old] = entry
    draft.ledger = ledger

    def fix(line: Line) -> None:
        if isinstance(line.value, dict) and all(isinstance(v, Line) for v in line.value.values()):
            for v in line.value.values():
                fix(v)
        named = [back(k) for k in line.keys]
        said = "; ".join(dict.fromkeys(s for _, s in named if s))
        if said:
            line.keys = tuple(dict.fromkeys(k for k, _ in named))
            line.note = f"{line.note}; {said}" if line.note else said

    for table in (*draft.tables.values(), *draft.sources):
        for line in table.values():
            fix(line)
    draft.warnings = [(msg, tuple(dict.fromkeys(back(k)[0] for k in keys))) for msg, keys in draft.warnings]
    draft.defaults = [(back(k)[0], m) for k, m in draft.defaults]
    for new in draft.displaced:
        draft.drop(new, "ignored-by-tool", f"`{draft.renamed[new]}`, its old name, is set too and wins.")
    for key, why in draft.overridden.items():
        draft.drop(key, "ignored-by-tool", why)
