"""Document filters of the data stage, one module per concern, behind one registry.

:data:`FILTERS` maps each `type` of the recipe's `[[data.filters]]` to its filter
class, and :func:`make_filter` builds one from its settings (every key spelt out:
the runtime declares no defaults, see :mod:`.base`). The stage runs each filter in
its role (:mod:`.base`) and never names a filter type itself.

* per document, in the worker processes: ``length`` (:mod:`.length`), ``regex``
  (:mod:`.regex`), ``gopher_quality`` (:mod:`.quality`), ``gopher_repetition``
  (:mod:`.repetition`), ``score`` (:mod:`.score`) and ``decontaminate``
  (:mod:`.decontaminate`);
* dedup, keys in the workers and an index in stream order: ``exact_dedup`` and
  ``minhash_dedup`` (:mod:`.dedup`);
* selection over all the documents that reach it, seeded: ``sample`` and
  ``score_sample`` (:mod:`.score`);
* scored by pretrained language models in the main process: ``perplexity`` and
  ``color_filter`` (:mod:`.model`; the models are run by ``..model_scores``).

The statistics the filters share live in :mod:`.words` (the two word units:
quality tokens and dedup words; lines; stop words) and :mod:`.text` (the byte
buffers and hashing that make them fast and the same in every process).

Worker processes call the batch functions on a ``list[str]`` and send back
small arrays (reason codes, digests, signatures); a document's results do not
depend on the other documents of its batch. Imports: the standard library,
numpy and xxhash only (this package is copied into every build; torch is imported only
where a model filter is run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import DEDUP, DOCUMENT, MODEL, SELECT, DedupFilter, DocumentFilter, Documents, Filter, SelectFilter
from .decontaminate import Decontaminate, contaminated, ngram_set
from .dedup import (
    ExactDedup,
    ExactDedupIndex,
    MinhashDedup,
    NearDedupIndex,
    exact_keys,
    lsh_band_keys,
    minhash_signatures,
    normalize_for_dedup,
)
from .length import Length, length_keep
from .model import ColorFilter, ModelFilter, Perplexity
from .quality import GOPHER_QUALITY_PARAMS, GOPHER_QUALITY_RULES, GopherQuality, gopher_quality
from .regex import Regex, regex_keep
from .repetition import (
    GOPHER_REPETITION_PARAMS,
    GOPHER_REPETITION_RULES,
    NAMED_NGRAM_SIZES,
    GopherRepetition,
    gopher_repetition,
)
from .score import Sample, Score, ScoreSample
from .words import QUALITY_TOKEN_PATTERN, count_words, shingle_hashes, word_hashes

__all__ = [
    "DEDUP",
    "DOCUMENT",
    "FILTERS",
    "MODEL",
    "GOPHER_QUALITY_PARAMS",
    "GOPHER_QUALITY_RULES",
    "GOPHER_REPETITION_PARAMS",
    "GOPHER_REPETITION_RULES",
    "NAMED_NGRAM_SIZES",
    "QUALITY_TOKEN_PATTERN",
    "SELECT",
    "ColorFilter",
    "Decontaminate",
    "DedupFilter",
    "DocumentFilter",
    "Documents",
    "ExactDedup",
    "ExactDedupIndex",
    "Filter",
    "GopherQuality",
    "GopherRepetition",
    "Length",
    "MinhashDedup",
    "ModelFilter",
    "NearDedupIndex",
    "Perplexity",
    "Regex",
    "Sample",
    "Score",
    "ScoreSample",
    "SelectFilter",
    "contaminated",
    "count_words",
    "exact_keys",
    "gopher_quality",
    "gopher_repetition",
    "length_keep",
    "lsh_band_keys",
    "make_filter",
    "minhash_signatures",
    "ngram_set",
    "normalize_for_dedup",
    "regex_keep",
    "shingle_hashes",
    "word_hashes",
]

FILTERS: dict[str, type[Filter]] = {
    cls.type: cls
    for cls in (
        Length,
        Regex,
        GopherQuality,
        GopherRepetition,
        Score,
        Decontaminate,
        ExactDedup,
        MinhashDedup,
        Sample,
        ScoreSample,
        Perplexity,
        ColorFilter,
    )
}
"""Every filter, by the `type` of its `[[data.filters]]` table."""


def make_filter(settings: Mapping[str, Any]) -> Filter:
    """The filter of ``settings`` (its `[[data.filters]]` table as a dict, every key spelt out).

    Raises:
        ValueError: an unknown `type`, or settings that lack a key of the filter or
            have one it does not know.
    """
    kind = settings.get("type")
    cls = FILTERS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown filter type {kind!r}; expected one of {', '.join(FILTERS)}")
    return cls(settings)
