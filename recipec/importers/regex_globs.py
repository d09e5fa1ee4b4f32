"""Parameter-name regexes as fnmatch globs, for the tools whose freezing and parameter groups
take regexes (axolotl's `unfrozen_parameters`, llm-foundry's `disable_grad` and `param_groups`):
recipec's parameter patterns are globs (recipec_runtime/param_patterns.py)."""

from __future__ import annotations

import fnmatch
import re

# axolotl's `unfrozen_parameters` and llm-foundry's `disable_grad` / `param_groups` pick
# parameters by regex; recipec's `optim.trainable` and `[[optim.groups]]` by fnmatch glob. A
# regex made of literals, `.`, `.*`, `.+`, character classes, `?`, `{m}`/`{m,n}` and
# alternatives is the union of a few globs; the rest (a quantified class in the middle of
# the name: `layers.2[0-9]+.mlp`, backreferences, lookarounds) has none.

_Tok = tuple[str, str]  # ("lit", "a"), ("any", ""), ("class", "[0-9]"), ("star", "")
_MAX_GLOBS = 16


class NoGlob(ValueError):
    """A regex construct no glob (or short union of globs) matches the same names as."""


def _split_top(regex: str, sep: str = "|") -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = regex.find("]", i + 2 if regex[i + 1 : i + 2] in ("]", "^") else i + 1)
            i = (j if j != -1 else len(regex)) + 1
            continue
        depth += c == "("
        depth -= c == ")"
        if c == sep and depth == 0:
            parts.append(regex[start:i])
            start = i + 1
        i += 1
    return parts + [regex[start:]]


def _elements(regex: str) -> list[tuple[list[list[_Tok]], int, int | None]]:
    """The regex (no anchors) as elements: (alternative token runs, min repeats, max repeats)."""
    out: list[tuple[list[list[_Tok]], int, int | None]] = []
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            e = regex[i + 1 : i + 2]
            if e == "d":
                alts = [[("class", "[0-9]")]]
            elif e and not e.isalnum():
                alts = [[("lit", e)]]
            else:
                raise NoGlob(f"`\\{e}`")
            i += 2
        elif c == ".":
            alts, i = [[("any", "")]], i + 1
        elif c == "[":
            j = regex.find("]", i + 2 if regex[i + 1 : i + 2] in ("]", "^") else i + 1)
            body = regex[i + 1 : j] if j != -1 else ""
            if j == -1 or "\\" in body or "[" in body:
                raise NoGlob(f"the class `{regex[i:]}`")
            alts, i = [[("class", "[" + ("!" + body[1:] if body.startswith("^") else body) + "]")]], j + 1
        elif c == "(":
            depth, j = 1, i + 1
            while j < len(regex) and depth:
                depth += {"(": 1, ")": -1}.get(regex[j], 0)
                j += 1 + (regex[j] == "\\")
            inner = regex[i + 1 : j - 1]
            if inner.startswith("?:"):
                inner = inner[2:]
            elif inner.startswith("?"):
                raise NoGlob(f"the group `({inner})`")
            alts = [_runs(_elements(a)) for a in _split_top(inner)]
            alts = [run for group in alts for run in group]
            i = j
        elif c in "*+?{)]|^$":
            raise NoGlob(f"`{c}` at {i} of `{regex}`")
        else:
            alts, i = [[("lit", c)]], i + 1
        lo, hi = 1, 1
        q = re.match(r"\*|\+|\?|\{(\d+)(,(\d*))?\}", regex[i:])
        if q:
            if q[0] == "*":
                lo, hi = 0, None
            elif q[0] == "+":
                lo, hi = 1, None
            elif q[0] == "?":
                lo, hi = 0, 1
            else:
                lo = int(q[1])
                hi = lo if q[2] is None else (int(q[3]) if q[3] else None)
            i += len(q[0])
            if regex[i : i + 1] in ("?", "+"):  # lazy or possessive: the same names match
                i += 1
        out.append((alts, lo, hi))
    return out


def _runs(elements: list[tuple[list[list[_Tok]], int, int | None]]) -> list[list[_Tok]]:
    """The token runs (alternatives) the elements spell; `.*` and `.+` become stars."""
    runs: list[list[_Tok]] = [[]]
    for alts, lo, hi in elements:
        if alts == [[("any", "")]] and hi is None:
            options = [[("any", "")] * lo + [("star", "")]]
        elif hi is None:
            raise NoGlob("a repeated class or literal (`+`, `*`, `{m,}`) inside the name")
        else:
            options = []
            for n in range(lo, hi + 1):
                combos: list[list[_Tok]] = [[]]
                for _ in range(n):
                    combos = [a + b for a in combos for b in alts]
                options += combos
        runs = [r + o for r in runs for o in options]
        if len(runs) > _MAX_GLOBS:
            raise NoGlob(f"more than {_MAX_GLOBS} alternatives")
    return runs


def _consume(tokens: list[_Tok], text: str) -> str:
    """Match `text` against the start of `tokens`: "no" (it cannot), "all" (the tokens match
    text's whole prefix and nothing of them is left but a star), "more" (text consumed, or a
    star reached: the match may go on past it)."""
    for i, ch in enumerate(text):
        if i >= len(tokens):
            return "all"
        kind, value = tokens[i]
        if kind == "star":
            return "all" if i == len(tokens) - 1 else "more"
        if (kind == "lit" and value != ch) or (kind == "class" and not fnmatch.fnmatchcase(ch, value)):
            return "no"
    rest = tokens[len(text) :]
    return "all" if not rest or rest == [("star", "")] else "more"


def _glob(tokens: list[_Tok]) -> str:
    out = ""
    for kind, value in tokens:
        text = {"lit": f"[{value}]" if value in "*?[" else value, "any": "?", "class": value, "star": "*"}[kind]
        if not (text == "*" and out.endswith("*")):
            out += text
    return out


def regex_globs(regex: str, *, search: bool, prefix: str = "") -> tuple[list[str], str]:
    """Globs on the names ``model.named_parameters()`` gives that pick the same parameters as
    ``re.search(regex, prefix + name)`` (``search``) or ``re.match`` (not ``search``): the
    globs (none when the regex can match no such name) and what differs ("" when nothing).

    Raises:
        NoGlob: a construct with no glob equivalent (its message names it).
    """
    globs: list[str] = []
    caveat = ""
    for alternative in _split_top(regex):
        start = alternative.startswith("^") or not search
        body = alternative[1:] if alternative.startswith("^") else alternative
        end = body.endswith("$") and not body.endswith("\\$")
        body = body[:-1] if end else body
        elements = _elements(body)
        while not end and elements and elements[-1][2] != elements[-1][1]:  # the end is open: `x+` is `x`, `x*` nothing
            alts, lo, _ = elements.pop()
            if lo:
                elements.append((alts, lo, lo))
                break
        for run in _runs(elements):
            tokens = ([] if start else [("star", "")]) + run + ([] if end else [("star", "")])
            if prefix and start:
                got = _consume(tokens, prefix)
                if got == "no":
                    continue  # cannot match a name that starts with the prefix
                if got == "all":
                    return ["*"], ""
                left = tokens
                for _ in prefix:  # drop the tokens the prefix took
                    if left[0][0] == "star":
                        break
                    left = left[1:]
                if left and left[0][0] == "star" and len(left) > 1:
                    caveat = f"`{alternative}` may match across the `{prefix}` its names start with"
                tokens = left
            elif prefix:
                found = {_consume(tokens[1:], prefix[k:]) for k in range(len(prefix))}
                if "all" in found:
                    return ["*"], ""  # it matches inside the prefix: every parameter
                if "more" in found:
                    caveat = f"`{alternative}` may match across the `{prefix}` its names start with"
            glob = _glob(tokens)
            if glob not in globs:
                globs.append(glob)
    return globs, caveat
