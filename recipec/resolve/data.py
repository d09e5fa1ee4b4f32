"""Resolve `[data]`: the data stage's settings and the checks that need the whole recipe.

The stage itself runs in the training script (or `recipec data`); what can be known at
build time is checked here, so a filter that cannot work with the recipe's tokenizer fails
in the first second (globs that match nothing: `recipec.local_files`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..runtime import stage_request
from ..schema.data import DOCUMENT_RECORDS
from ..schema.filters import LengthFilter, ScoreFilter, ScoreSampleFilter

if TYPE_CHECKING:  # pragma: no cover
    from .builder import PlanBuilder
    from ..schema import Recipe
    from ..schema.data import Source


def source_dicts(sources: list[Source]) -> list[dict[str, Any]]:
    """Sources as the data stage reads them: what is set, filters with every default spelled out."""
    out = []
    for src in sources:
        # a default the sources always had is left out: the stage's cache keys of older recipes stay as they were
        skip = ({"text_field", "records"} if src.builtin else set()) | ({"system"} if src.system == "keep" else set())
        skip |= {"prompt_style"} if src.prompt_style == "chat" else set()
        skip |= {"as_chat"} if not src.as_chat else set()
        skip |= {"input_separator"} if src.input_separator == "\n\n" else set()
        d = src.model_dump(exclude_none=True, exclude=skip or None)
        d["filters"] = [f.model_dump() for f in src.filters]
        out.append(d)
    return out


def filter_dicts(recipe: Recipe) -> list[dict[str, Any]]:
    """`[[data.filters]]` with every default spelled out, in chain order."""
    return [f.model_dump() for f in recipe.data.filters]


def data_settings(b: PlanBuilder) -> None:
    """Add the data stage's settings to the plan and check what needs the whole recipe."""
    recipe = b.recipe
    b.section("data")
    d = recipe.data
    b.add("sources", source_dicts(d.sources), "data.sources", b.origin(("data", "sources")))
    b.add("filters", filter_dicts(recipe), "data.filters (after each source's own)", b.origin(("data", "filters")))
    if d.seed is None:
        b.derived("data_seed", recipe.recipe.seed, "data.seed (unset: recipe.seed): the split, the mixture, the order of the data")
    else:
        b.key("data_seed", ("data", "seed"))
    for name in stage_request.DATA_FIELDS:
        b.key(name, ("data", name))
    examples = any(src.records not in DOCUMENT_RECORDS for src in d.sources)
    b.derived("examples", examples, "derived: a source's records are not text, so every document is an example")

    trained = recipe.tokenizer.train is not None
    token_sources(b)
    for i, src in enumerate(d.sources):
        if src.max_tokens is not None and trained:
            b.error(
                ("data", "sources", i, "max_tokens"),
                "max_tokens counts tokens with the recipe's tokenizer, but [tokenizer.train] trains it on the data that is read",
                "bound the source with max_documents, or load a tokenizer with [tokenizer] path",
            )
    chains: list[tuple[tuple[Any, ...], list[Any]]] = [(("data", "filters"), list(d.filters))]
    chains += [(("data", "sources", i, "filters"), list(src.filters)) for i, src in enumerate(d.sources)]
    for path, chain in chains:
        for j, f in enumerate(chain):
            if isinstance(f, LengthFilter) and f.unit == "tokens" and trained:
                b.error(
                    path + (j, "unit"),
                    "a length filter in tokens needs the tokenizer before the data is filtered, "
                    "but [tokenizer.train] trains it on the filtered data",
                    'use unit = "words" or "chars", or load a tokenizer with [tokenizer] path',
                )
            if isinstance(f, (ScoreFilter, ScoreSampleFilter)) and path == ("data", "filters"):
                for i, src in enumerate(d.sources):
                    if src.builtin is not None:
                        b.error(
                            path + (j, "field"),
                            f"sources[{i}] is the builtin {src.builtin!r}, which has no score field {f.field!r}",
                            "put the filter in the scored source's own [[data.sources.filters]]",
                        )



def token_sources(b: PlanBuilder) -> None:
    """Token sources (`records = "tokens"`): ids of a named tokenizer, which [tokenizer.train] cannot match; the filters pass over them."""
    d = b.recipe.data
    tokens = [i for i, src in enumerate(d.sources) if src.records == "tokens"]
    if not tokens:
        return
    if b.recipe.tokenizer.train is not None:
        i = tokens[0]
        b.error(
            ("data", "sources", i, "tokenizer"),
            f"sources[{i}] holds ids of the tokenizer {d.sources[i].tokenizer!r}, and [tokenizer.train] trains a new "
            "tokenizer whose ids mean other tokens",
            f"load that tokenizer with [tokenizer] path = {json.dumps(d.sources[i].tokenizer)} instead of training one",
        )
    if d.filters:
        which = ", ".join(f"sources[{i}]" for i in tokens)
        b.warn(
            ("data", "filters"),
            f"the [[data.filters]] read text and pass over {which}, which hold token ids",
            "filter a token source's text before it is tokenized",
        )
