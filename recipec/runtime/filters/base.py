"""What a filter of the data stage is: built from its settings, in one of three roles.

A filter is built from its settings: the dict of its `[[data.filters]]` table as
the stage receives it, with every key spelt out (recipec's resolve dumps the recipe's
filters with their defaults). The runtime declares no defaults of its own: a
missing or unknown key is an error that names it, so the recipe's schema is the one
place a default lives. The stage runs a filter in one of three roles:

* :class:`DocumentFilter`: decided per document, in the worker processes, from the
  document alone (its text, a numeric field, its token ids): a reason code per
  document, 0 for kept.
* :class:`DedupFilter`: the workers compute keys per document; the main process
  then walks the documents in stream order and drops those an index has seen.
* :class:`SelectFilter`: decided in the main process over all the documents that
  reach it (sampling), with a seeded generator.
* ``model`` (:class:`.model.ModelFilter`): decided in the main process from what
  pretrained language models make of the texts of the documents that reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

DOCUMENT, DEDUP, SELECT, MODEL = "document", "dedup", "select", "model"


def settings_of(settings: Mapping[str, Any], kind: str, keys: Sequence[str]) -> dict[str, Any]:
    """The settings of a ``kind`` filter, checked to hold exactly ``type`` and ``keys``.

    Raises:
        ValueError: naming the missing and the unknown keys.
    """
    missing = [k for k in keys if k not in settings]
    unknown = sorted(set(settings) - set(keys) - {"type"})
    if settings.get("type") != kind:
        raise ValueError(f"a {kind} filter was given settings of type {settings.get('type')!r}")
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)} (there are no defaults here: pass every setting)")
        if unknown:
            problems.append(f"unknown {', '.join(unknown)}")
        raise ValueError(f"{kind} filter: {'; '.join(problems)}")
    return {k: settings[k] for k in keys}


def check_params(params: Mapping[str, object], names: Sequence[str], where: str) -> None:
    """Check that a function's ``**params`` are exactly ``names``.

    Raises:
        TypeError: naming the unknown parameters first, then the missing ones.
    """
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise TypeError(f"{where}() got unknown parameters {unknown}; known: {sorted(names)}")
    missing = [n for n in names if n not in params]
    if missing:
        raise TypeError(f"{where}() is missing parameters {missing}: every threshold is passed (None disables a rule)")


def first_failures(
    n: int, rules: tuple[str, ...], checks: list[tuple[str, object, Callable[[object], np.ndarray]]]
) -> np.ndarray:
    """int8 reason codes from ``(rule, threshold, fails)`` checks in evaluation order.

    A document gets the code of ``rules`` (index + 1) of the first check it
    fails; checks whose threshold is None are skipped.
    """
    codes = np.zeros(n, np.int8)
    for rule, threshold, fails in checks:
        if threshold is not None:
            codes[(codes == 0) & fails(threshold)] = rules.index(rule) + 1
    return codes


@dataclass
class Documents:
    """A batch of documents as a per-document filter sees it.

    Attributes:
        texts: The texts.
        fields: The numeric fields the chain's filters read, one value per text.
        tokens: Returns the token ids of each text (the stage encodes them once, on
            the first call, and keeps them for tokenizing later); None without a tokenizer.
    """

    texts: list[str]
    fields: dict[str, list] = field(default_factory=dict)
    tokens: Callable[[], list[np.ndarray]] | None = None

    def token_ids(self) -> list[np.ndarray]:
        if self.tokens is None:
            raise ValueError("these documents come without a tokenizer; lengths in tokens need one")
        return self.tokens()


class Index(Protocol):
    def check_and_add(self, *row: Any) -> int | None: ...


class Filter:
    """A filter of the data stage, built from its settings.

    Subclasses name their ``type`` (the recipe's `type`), every other key of their
    settings (``keys``) and their ``role``.
    """

    type: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    role: ClassVar[str]
    rules: ClassVar[tuple[str, ...]] = ()
    """Names of the reason codes of a per-document filter: code k is ``rules[k - 1]``; empty: no names."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings_of(settings, self.type, self.keys)

    @property
    def field(self) -> str | None:
        """The numeric field of each document this filter reads, if any."""
        return None

    def input_source(self) -> dict[str, Any] | None:
        """Files besides the sources that decide what this filter drops, as a source dict (None: none)."""
        return None

    def prepare(self, texts: list[str]) -> None:
        """Take the texts of :meth:`input_source`, before any document is filtered."""


class DocumentFilter(Filter):
    role = DOCUMENT

    def verdicts(self, docs: Documents) -> np.ndarray:
        """int8 per document: 0 kept, else the reason code it is dropped for (see ``rules``)."""
        raise NotImplementedError


class DedupFilter(Filter):
    role = DEDUP

    def features(self, texts: list[str]) -> tuple[np.ndarray, ...]:
        """Per-document arrays (one row per text) that :meth:`index` compares."""
        raise NotImplementedError

    def index(self) -> Index:
        """A new, empty index: ``check_and_add(*row)`` returns the id (in order of addition)
        of the earlier document a row duplicates, or None after adding it."""
        raise NotImplementedError


class SelectFilter(Filter):
    role = SELECT

    def drop(
        self, docs: np.ndarray, n_docs: int, seed: list[int], scores: Callable[[str], np.ndarray]
    ) -> np.ndarray:
        """Which of ``docs`` (ascending ids among ``n_docs``) to drop, as a bool array.

        Args:
            docs: The ids of the documents that reach the filter.
            n_docs: All documents of the stage; random draws are made for each, so a
                document's draw does not depend on which others reach the filter.
            seed: The seed of this filter's place in the chain.
            scores: A field's values for ``docs``.
        """
        raise NotImplementedError
