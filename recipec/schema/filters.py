"""Data filters: `[[data.filters]]` (every source) and `[[data.sources.filters]]` (one source).

One model per filter, chosen by `type`, so each filter's own options are validated and an
option of another filter is an unknown key. The defaults of the Gopher rules are those of
Rae et al. (2021), appendix A, as datatrove ships them. These are the only defaults of the
filters: resolve spells every setting out for the data stage, whose filters
(`recipec_runtime/filters/`) declare none of their own.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Table, key_error

Globs = str | list[str]


def _check_range(low: float | None, high: float | None, kind: str) -> None:
    """A filter's [min, max]: at least one bound, in order."""
    if low is None and high is None:
        raise key_error("min", f"a {kind} filter needs `min`, `max` or both")
    if low is not None and high is not None and low > high:
        raise key_error("max", f"max {high} is below min {low}")


class LengthFilter(Table):
    """`type = "length"`: keep documents whose length is within [min, max]."""

    type: Literal["length"]
    """The filter."""

    unit: Literal["chars", "words", "tokens"] = "words"
    """What is counted: characters, words, or tokens of the recipe's tokenizer (not with `[tokenizer.train]`, whose tokenizer is trained on the filtered data). Words are those `gopher_quality` counts: the text is cut at whitespace, `-`, `=` and runs of dots, and each piece with a letter or digit is one word, from its first to its last letter or digit (punctuation inside stays: `don't`, `U.S`); punctuation marks are not words. `Don't stop -- U.S. rules!` is 4 words."""

    min: int | None = Field(None, ge=0)
    """Drop documents shorter than this. Unset: no lower bound."""

    max: int | None = Field(None, ge=1)
    """Drop documents longer than this. Unset: no upper bound."""

    @model_validator(mode="after")
    def check_bounds(self) -> LengthFilter:
        _check_range(self.min, self.max, "length")
        return self


class RegexFilter(Table):
    """`type = "regex"`: keep documents that match an `include` pattern (if any are given) and no `exclude` pattern."""

    type: Literal["regex"]
    """The filter."""

    include: list[str] = Field(default_factory=list)
    """Python regular expressions (searched anywhere in the text); a document must match at least one. Empty: no requirement."""

    exclude: list[str] = Field(default_factory=list)
    """Python regular expressions; a document that matches any of them is dropped."""

    ignore_case: bool = False
    """Match without regard to case."""

    @model_validator(mode="after")
    def check_patterns(self) -> RegexFilter:
        if not self.include and not self.exclude:
            raise key_error("include", "a regex filter needs `include` or `exclude` patterns")
        for key in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, key)):
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise key_error(key, f"{key}[{i}] {pattern!r} is not a valid regular expression: {e}") from None
        return self


class ExactDedupFilter(Table):
    """`type = "exact_dedup"`: drop a document whose text equals an earlier one's (the first is kept)."""

    type: Literal["exact_dedup"]
    """The filter."""

    normalize: bool = True
    """Compare normalised text: lowercased, punctuation and symbols removed, whitespace runs collapsed. Off: byte-for-byte."""


class MinhashDedupFilter(Table):
    """`type = "minhash_dedup"`: drop near-duplicates found by MinHash LSH (the first of a group is kept)."""

    type: Literal["minhash_dedup"]
    """The filter."""

    shingle_size: int = Field(5, ge=1, le=64)
    """Words per shingle (the sets compared are a document's word n-grams)."""

    num_perm: int = Field(128, ge=2, le=1024)
    """Hash permutations, the length of each signature."""

    bands: int = Field(16, ge=1)
    """LSH bands; `num_perm / bands` rows each. Two documents become candidates when all rows of one band agree; more bands find pairs of lower similarity."""

    threshold: float = Field(0.8, gt=0, le=1)
    """A candidate is a duplicate when its estimated Jaccard similarity (the fraction of equal signature entries) with an earlier kept document is at least this."""

    seed: int = Field(1, ge=0)
    """Seed of the hash permutations."""

    @model_validator(mode="after")
    def check_bands(self) -> MinhashDedupFilter:
        if self.bands > self.num_perm or self.num_perm % self.bands:
            raise key_error(
                "bands",
                f"bands ({self.bands}) must divide num_perm ({self.num_perm})",
                "e.g. num_perm = 128 with bands = 16 (8 rows) or 32 (4 rows)",
            )
        return self


GopherQualityRule = Literal[
    "min_words",
    "max_words",
    "min_mean_word_length",
    "max_mean_word_length",
    "max_symbol_word_ratio",
    "max_bullet_lines_ratio",
    "max_ellipsis_lines_ratio",
    "min_alpha_words_ratio",
    "min_stop_words",
]


class GopherQualityFilter(Table):
    """`type = "gopher_quality"`: the quality heuristics of Gopher (Rae et al. 2021, appendix A.1.1)."""

    type: Literal["gopher_quality"]
    """The filter."""

    min_words: int = Field(50, ge=0)
    """Drop documents with fewer words (as the length filter's `unit = "words"` counts them: pieces of text with a letter or digit; punctuation marks are not counted)."""

    max_words: int = Field(100_000, ge=1)
    """Drop documents with more words."""

    min_mean_word_length: float = Field(3, ge=0)
    """Drop documents whose mean word length (characters) is below this."""

    max_mean_word_length: float = Field(10, gt=0)
    """Drop documents whose mean word length is above this."""

    max_symbol_word_ratio: float = Field(0.1, ge=0)
    """Drop documents with more `#` per word than this, or more ellipses (`...`, `…`) per word (two rules)."""

    max_bullet_lines_ratio: float = Field(0.9, ge=0, le=1)
    """Drop documents where more than this fraction of lines start with a bullet (`•` or `-`)."""

    max_ellipsis_lines_ratio: float = Field(0.3, ge=0, le=1)
    """Drop documents where more than this fraction of lines end with an ellipsis."""

    min_alpha_words_ratio: float = Field(0.8, ge=0, le=1)
    """Drop documents where less than this fraction of words contain an alphabetic character."""

    min_stop_words: int = Field(2, ge=0)
    """Drop documents that contain fewer than this many different words of `stop_words` (English text has many; code, lists and spam few)."""

    stop_words: list[str] = Field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])
    """The stop words counted by `min_stop_words`, matched as whole words, case-sensitively (as datatrove does: "The" is not "the")."""

    skip: list[GopherQualityRule] = Field(default_factory=list)
    """Rules not to apply, by name, e.g. `["min_stop_words"]` for a corpus that is not English prose."""


GopherRepetitionRule = Literal[
    "max_dup_line_ratio",
    "max_dup_para_ratio",
    "max_dup_line_char_ratio",
    "max_dup_para_char_ratio",
    "max_top_ngram_char_ratios",
    "max_dup_ngram_char_ratios",
]


class GopherRepetitionFilter(Table):
    """`type = "gopher_repetition"`: the repetition heuristics of Gopher (Rae et al. 2021, table A1)."""

    type: Literal["gopher_repetition"]
    """The filter."""

    max_dup_line_ratio: float = Field(0.3, ge=0, le=1)
    """Drop documents where more than this fraction of lines repeat an earlier line."""

    max_dup_para_ratio: float = Field(0.3, ge=0, le=1)
    """Drop documents where more than this fraction of paragraphs (split at blank lines) repeat an earlier one."""

    max_dup_line_char_ratio: float = Field(0.2, ge=0, le=1)
    """Drop documents where repeated lines hold more than this fraction of the characters."""

    max_dup_para_char_ratio: float = Field(0.2, ge=0, le=1)
    """Drop documents where repeated paragraphs hold more than this fraction of the characters."""

    max_top_ngram_char_ratios: list[list[float]] = Field(default_factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]])
    """`[n, ratio]` pairs: drop documents whose most frequent word n-gram covers more than `ratio` of the word characters."""

    max_dup_ngram_char_ratios: list[list[float]] = Field(
        default_factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]
    )
    """`[n, ratio]` pairs: drop documents where every occurrence of the word n-grams that occur more than once (the first included, as the Gopher paper defines it; datatrove counts only the repeats) covers more than `ratio` of the word characters."""

    skip: list[GopherRepetitionRule] = Field(default_factory=list)
    """Rules not to apply, by name."""

    @model_validator(mode="after")
    def check_pairs(self) -> GopherRepetitionFilter:
        for key in ("max_top_ngram_char_ratios", "max_dup_ngram_char_ratios"):
            for pair in getattr(self, key):
                if len(pair) != 2 or pair[0] != int(pair[0]) or not 1 <= pair[0] <= 64 or not 0 <= pair[1] <= 1:
                    raise key_error(key, f"{pair}: each entry is [n, ratio] with n a whole number in 1..64 and ratio in [0, 1]")
        return self


class ScoreFilter(Table):
    """`type = "score"`: keep documents whose numeric `field` is within [min, max]."""

    type: Literal["score"]
    """The filter."""

    field: str = Field(min_length=1)
    """The numeric field (jsonl key, parquet or dataset column) holding the score; every document must have it."""

    min: float | None = None
    """Drop documents scoring below this."""

    max: float | None = None
    """Drop documents scoring above this."""

    @model_validator(mode="after")
    def check_bounds(self) -> ScoreFilter:
        _check_range(self.min, self.max, "score")
        return self


class ScoreSampleFilter(Table):
    """`type = "score_sample"`: keep a share of the documents, sampled without replacement with probabilities proportional to exp(score / temperature) (QuRating)."""

    type: Literal["score_sample"]
    """The filter."""

    field: str = Field(min_length=1)
    """The numeric field holding the score (e.g. a quality rating); every document must have it."""

    rate: float = Field(gt=0, le=1)
    """Share of the documents reaching this filter that is kept."""

    temperature: float = Field(1.0, gt=0)
    """Sampling temperature: low keeps mostly the top scores (QuRating found top-only selection worse than sampling at temperature 2 with its ratings); high approaches uniform sampling."""


class SampleFilter(Table):
    """`type = "sample"`: keep each document with probability `rate`, seeded by `recipe.seed`."""

    type: Literal["sample"]
    """The filter."""

    rate: float = Field(gt=0, lt=1)
    """Probability of keeping a document."""


class DecontaminateFilter(Table):
    """`type = "decontaminate"`: drop documents that share a word n-gram with the given evaluation files."""

    type: Literal["decontaminate"]
    """The filter."""

    path: Globs
    """Glob(s) of the evaluation files (jsonl, parquet or text, as for sources), relative to the directory `recipec` runs in."""

    text_field: str = "text"
    """The field holding the text in jsonl or parquet evaluation files."""

    ngram: int = Field(13, ge=1, le=64)
    """n-gram length in words (13 as in GPT-3's decontamination)."""

    @model_validator(mode="after")
    def check_path(self) -> DecontaminateFilter:
        if isinstance(self.path, list) and not self.path:
            raise key_error("path", "`path` is an empty list", "give at least one glob")
        return self


ScorerDtype = Literal["float32", "bfloat16", "float16"]


class _ModelScore(Table):
    """What the filters that score documents with a pretrained causal language model share."""

    max_tokens: int = Field(512, ge=2)
    """Tokens of each document that are scored: its first ones, as the scoring model's tokenizer cuts them (with the special tokens it adds). A document of fewer than 2 tokens has no score and is dropped."""

    batch_size: int = Field(8, ge=1)
    """Documents per forward pass of the scoring model (documents of similar length are batched together)."""

    dtype: ScorerDtype = "float32"
    """Precision of the scoring model's weights (the loss is taken in float32 either way). bfloat16 halves its memory and time on a GPU; scores then differ in the third digit."""


def _check_hub_revision(path: str, revision: str | None, key: str) -> None:
    if revision is not None and path.startswith(("./", "../", "/", "~")):
        raise key_error(key, f"`{key}` pins a hub repository's branch, tag or commit, and {path!r} is a local directory")


class PerplexityFilter(_ModelScore):
    """`type = "perplexity"`: score each document with a pretrained causal language model and keep those whose perplexity is within [min, max], or the `rate` of them with the lowest perplexity (the perplexity filters of CCNet and "Perplexed by Perplexity"). Runs in the data stage on a GPU when there is one (the main process of the training run, or `recipec data`)."""

    type: Literal["perplexity"]
    """The filter."""

    model: str = Field(min_length=1)
    """The scoring model: a local directory (starting with ./, ../, / or ~) or a hub id, loaded with `AutoModelForCausalLM` and its own tokenizer. The lock records its files or commit, and the data stage's cache key its content."""

    revision: str | None = None
    """The hub branch, tag or commit of `model` (unset: main)."""

    min: float | None = Field(None, ge=1)
    """Drop documents whose perplexity is below this (repeated or boilerplate text scores very low)."""

    max: float | None = Field(None, ge=1)
    """Drop documents whose perplexity is above this."""

    rate: float | None = Field(None, gt=0, lt=1)
    """Instead of bounds: keep this share of the scored documents reaching the filter, those of lowest perplexity."""

    @model_validator(mode="after")
    def check_selection(self) -> PerplexityFilter:
        if self.rate is not None and (self.min is not None or self.max is not None):
            raise key_error("rate", "a perplexity filter keeps either the documents within [min, max] or a `rate` of them, not both")
        if self.rate is None:
            if self.min is None and self.max is None:
                raise key_error("max", "a perplexity filter needs `max`, `min` or both, or a `rate` to keep")
            _check_range(self.min, self.max, "perplexity")
        _check_hub_revision(self.model, self.revision, "revision")
        return self


class ColorFilter(_ModelScore):
    """`type = "color_filter"`: CoLoR-Filter (Brandfonbrener et al., 2024): keep the `rate` of the documents on which a model fine-tuned on the target domain (`conditional_model`) lowers the loss most from the model it was tuned from (`prior_model`). The score is the prior model's mean loss per token minus the conditional model's; the documents of highest score are kept. Both models must share a tokenizer."""

    type: Literal["color_filter"]
    """The filter."""

    prior_model: str = Field(min_length=1)
    """The model before it was fine-tuned on the target domain: a local directory or a hub id."""

    prior_revision: str | None = None
    """The hub branch, tag or commit of `prior_model` (unset: main)."""

    conditional_model: str = Field(min_length=1)
    """The prior model fine-tuned on a small set of target-domain text: a local directory or a hub id."""

    conditional_revision: str | None = None
    """The hub branch, tag or commit of `conditional_model` (unset: main)."""

    rate: float = Field(gt=0, lt=1)
    """Share of the scored documents reaching the filter that is kept (the paper selects 1 in 4 to 1 in 64)."""

    @model_validator(mode="after")
    def check_models(self) -> ColorFilter:
        if self.prior_model == self.conditional_model and self.prior_revision == self.conditional_revision:
            raise key_error("conditional_model", "`conditional_model` is `prior_model`: every score would be 0", "name the model fine-tuned on the target domain")
        _check_hub_revision(self.prior_model, self.prior_revision, "prior_revision")
        _check_hub_revision(self.conditional_model, self.conditional_revision, "conditional_revision")
        return self


MODEL_FILTERS = {
    "perplexity": (("model", "revision"),),
    "color_filter": (("prior_model", "prior_revision"), ("conditional_model", "conditional_revision")),
}
"""The filters that load pretrained models: by `type`, the keys that name each model and its hub revision."""


Filter = Annotated[
    LengthFilter
    | RegexFilter
    | ExactDedupFilter
    | MinhashDedupFilter
    | GopherQualityFilter
    | GopherRepetitionFilter
    | ScoreFilter
    | ScoreSampleFilter
    | SampleFilter
    | DecontaminateFilter
    | PerplexityFilter
    | ColorFilter,
    Field(discriminator="type"),
]

FILTER_TABLES = (
    LengthFilter,
    RegexFilter,
    ExactDedupFilter,
    MinhashDedupFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    ScoreFilter,
    ScoreSampleFilter,
    SampleFilter,
    DecontaminateFilter,
    PerplexityFilter,
    ColorFilter,
)
