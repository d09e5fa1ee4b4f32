"""read, for chat templates: the recipe's template text, the local tokenizer's own, and a probe render.

`tokenizer.chat_template` is a `.jinja` file (relative to the project directory) or the
template itself. A local tokenizer's own template (chat_template.jinja or the
`chat_template` of tokenizer_config.json) is read too, so a recipe with conversations and
no template anywhere fails at build time, naming the source. Whatever template applies is
rendered on a probe conversation with jinja2 alone (the compiler never imports
transformers): a template that does not parse or raises fails here, and one without
`{% generation %}` markers must render the probe turn by turn as prefixes of the whole, as
the data stage will need. The stage repeats the check on tokens.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostic
from .runtime.chat import PROBE, has_generation_markers  # stdlib only: the same probe the data stage uses
from .schema import Recipe
from .source import SourceMap


@dataclass(frozen=True)
class ChatTemplates:
    """What the build knows of the chat templates."""

    recipe: str | None = None
    """The recipe's `tokenizer.chat_template`, as text (read from its file)."""
    file: str | None = None
    """The file it was read from, as the recipe names it; None for an inline template."""
    tokenizer: str | None = None
    """The local tokenizer's own template; None when it has none or is not local."""
    tokenizer_known: bool = False
    """Whether the tokenizer was read here (local, or trained by the recipe: no template)."""

    @property
    def effective(self) -> str | None:
        return self.recipe if self.recipe is not None else self.tokenizer


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_chat_templates(
    recipe: Recipe, source: SourceMap, project: Path, tokenizer_dir: str | None
) -> tuple[ChatTemplates, list[Diagnostic]]:
    """Read the recipe's template and the local tokenizer's own.

    Args:
        tokenizer_dir: the tokenizer directory when it is local (the tokenizer's or the
            model's path, or a continual parent's model), else None.

    Returns:
        What was found, and errors at `tokenizer.chat_template` for a file that cannot be read.
    """
    errors: list[Diagnostic] = []
    key = ("tokenizer", "chat_template")
    text, file = recipe.tokenizer.chat_template, None
    if text is not None and text.endswith(".jinja") and "\n" not in text and "{" not in text:
        file = text
        try:
            text = (project / Path(file).expanduser()).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, RuntimeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            errors.append(
                Diagnostic(
                    "error",
                    f"cannot read the chat template {file!r}: {why}",
                    source.locate(key),
                    "paths are relative to the directory recipec runs in",
                )
            )
            text = None
    own, known = None, recipe.tokenizer.train is not None
    if tokenizer_dir is not None:
        own, known = _tokenizer_template(project, tokenizer_dir)
    return ChatTemplates(recipe=text, file=file, tokenizer=own, tokenizer_known=known), errors


def _tokenizer_template(project: Path, path: str) -> tuple[str | None, bool]:
    """A local tokenizer's own template, and whether the directory could be read."""
    try:
        jinja = project / Path(path).expanduser() / "chat_template.jinja"
        directory = jinja.parent
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8"), True
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RuntimeError):
        return None, False
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    return (template if isinstance(template, str) else None), True


def probe(template: str, special_tokens: dict[str, str]) -> str | None:
    """Render the probe conversation with jinja2; return what is wrong, or None.

    A template without `{% generation %}` markers must render each conversation prefix as
    a prefix of the whole (with the generation prompt before each assistant turn).
    """
    from jinja2 import TemplateError, nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` as transformers reads it: its body, marked."""

        tags = {"generation"}

        def parse(self, parser):  # type: ignore[no-untyped-def]
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

        def _mark(self, caller):  # type: ignore[no-untyped-def]
            return caller()

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    # transformers' own environment: the same options, and loop controls ({% break %}, {% continue %})
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "26 Jul 2024"
    try:
        compiled = env.from_string(template)

        def render(messages: list[dict[str, str]], prompt: bool) -> str:
            return compiled.render(messages=messages, add_generation_prompt=prompt, **special_tokens)

        whole = render(list(PROBE), False)
        if has_generation_markers(template):
            return None
        for i, m in enumerate(PROBE):
            if m["role"] != "assistant":
                continue
            before = render(list(PROBE[:i]), True)
            upto = render(list(PROBE[: i + 1]), False)
            if not (whole.startswith(upto) and upto.startswith(before)):
                return (
                    "it has no {% generation %} markers, and rendering a conversation turn by turn does not give "
                    "prefixes of the whole, so the assistant tokens cannot be found"
                )
    except TemplateError as exc:
        return f"it fails on a probe conversation: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 -- a template may raise anything from its own code
        return f"it fails on a probe conversation: {type(exc).__name__}: {exc}"
    return None
