"""Document filters of the data stage (recipec/runtime/filters/): Gopher rules, dedup, decontamination, the registry."""

import inspect
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from recipec.runtime import filters
from recipec.runtime.filters import (
    GOPHER_QUALITY_RULES,
    GOPHER_REPETITION_PARAMS,
    GOPHER_REPETITION_RULES,
    QUALITY_TOKEN_PATTERN,
    ExactDedupIndex,
    NearDedupIndex,
    contaminated,
    count_words,
    exact_keys,
    gopher_quality,
    gopher_repetition,
    length_keep,
    lsh_band_keys,
    minhash_signatures,
    ngram_set,
    normalize_for_dedup,
    regex_keep,
    shingle_hashes,
    word_hashes,
)
from recipec.schema.filters import FILTER_TABLES, GopherQualityFilter, GopherRepetitionFilter, LengthFilter, MinhashDedupFilter

REPO = Path(__file__).resolve().parents[2]


def recipe_defaults(table) -> dict:
    """A filter table of the recipe with its defaults, as resolve passes it to the stage."""
    return table(type=table.model_fields["type"].annotation.__args__[0]).model_dump()


# the runtime declares no defaults: the recipe's (its schema's) are the thresholds "by default"
QUALITY_DEFAULTS = filters.GopherQuality(recipe_defaults(GopherQualityFilter)).params
REPETITION_DEFAULTS = filters.GopherRepetition(recipe_defaults(GopherRepetitionFilter)).params
MINHASH = {k: recipe_defaults(MinhashDedupFilter)[k] for k in ("shingle_size", "num_perm", "seed")}

# Words of mean length 41/11 = 3.7, four of them stop words; no punctuation.
VOCAB = ["the", "river", "flows", "to", "sea", "of", "green", "hills", "and", "old", "towns"]


def prose(n: int) -> str:
    return " ".join(VOCAB[i % len(VOCAB)] for i in range(n))


def quality(text: str, **params) -> str:
    """The name of the first quality rule ``text`` fails, or "kept"."""
    code = int(gopher_quality([text], **{**QUALITY_DEFAULTS, **params})[0])
    return GOPHER_QUALITY_RULES[code - 1] if code else "kept"


def repetition(text: str, **params) -> str:
    """The name of the first repetition rule ``text`` fails, or "kept"."""
    code = int(gopher_repetition([text], **{**REPETITION_DEFAULTS, **params})[0])
    return GOPHER_REPETITION_RULES[code - 1] if code else "kept"


def only(rule: str, threshold: float) -> dict:
    """gopher_repetition parameters that check ``rule`` alone, at ``threshold``."""
    params = {k: None for k in GOPHER_REPETITION_PARAMS}
    match = re.fullmatch(r"max_(top|dup)_(\d+)gram_char_ratio", rule)
    if match:
        params[f"max_{match[1]}_ngram_char_ratios"] = {int(match[2]): threshold}
    else:
        params[rule] = threshold
    return params


# -- the registry -----------------------------------------------------------------

# the settings a filter table requires, beside its defaults
REQUIRED = {
    "length": {"min": 1},
    "regex": {"include": ["a"]},
    "score": {"field": "q", "min": 0.5},
    "score_sample": {"field": "q", "rate": 0.5},
    "sample": {"rate": 0.5},
    "decontaminate": {"path": "eval.jsonl"},
    "perplexity": {"model": "org/lm", "max": 1000.0},
    "color_filter": {"prior_model": "org/lm", "conditional_model": "org/lm-tuned", "rate": 0.25},
}


def recipe_settings(table) -> dict:
    """Every setting of a filter table, as resolve dumps it for the stage."""
    kind = table.model_fields["type"].annotation.__args__[0]
    return table(type=kind, **REQUIRED.get(kind, {})).model_dump()


def test_every_filter_of_the_recipe_has_one_runtime_filter_with_the_same_settings():
    assert set(filters.FILTERS) == {table.model_fields["type"].annotation.__args__[0] for table in FILTER_TABLES}
    for table in FILTER_TABLES:
        settings = recipe_settings(table)
        f = filters.make_filter(settings)
        assert type(f) is filters.FILTERS[settings["type"]] and f.type == settings["type"]
        assert set(f.keys) == set(settings) - {"type"}, settings["type"]
        assert f.role in (filters.DOCUMENT, filters.DEDUP, filters.SELECT, filters.MODEL)
    with pytest.raises(ValueError, match="unknown filter type 'lenght'; expected one of length, regex"):
        filters.make_filter({"type": "lenght"})


def test_the_runtime_has_no_defaults_of_its_own():
    """Each setting of each filter must be given: a default lives in the recipe's schema only."""
    for table in FILTER_TABLES:
        settings = recipe_settings(table)
        for key in set(settings) - {"type"}:
            partial = {k: v for k, v in settings.items() if k != key}
            with pytest.raises(ValueError, match=rf"{settings['type']} filter: missing {key} \(there are no defaults here"):
                filters.make_filter(partial)
        with pytest.raises(ValueError, match=rf"{settings['type']} filter: unknown extra"):
            filters.make_filter({**settings, "extra": 1})
    # nor do the functions the filters call: every threshold and size is an argument
    for fn in (
        filters.length_keep, filters.regex_keep, filters.gopher_quality, filters.gopher_repetition, filters.exact_keys,
        filters.minhash_signatures, filters.lsh_band_keys, filters.ngram_set, filters.contaminated,
    ):  # fmt: skip
        defaults = [p.name for p in inspect.signature(fn).parameters.values() if p.default is not p.empty]
        assert defaults == [], f"{fn.__name__} has defaults for {defaults}"
    with pytest.raises(TypeError, match=r"missing parameters \['max_words'\]"):
        gopher_quality(["x"], **{k: v for k, v in QUALITY_DEFAULTS.items() if k != "max_words"})
    with pytest.raises(TypeError, match=r"missing parameters \['max_dup_line_ratio'\]"):
        gopher_repetition(["x"], **{k: v for k, v in REPETITION_DEFAULTS.items() if k != "max_dup_line_ratio"})


def test_gopher_filters_turn_the_recipes_settings_into_thresholds():
    quality = filters.GopherQuality({**recipe_defaults(GopherQualityFilter), "skip": ["min_stop_words"]})
    assert quality.params["min_stop_words"] is None and quality.params["stop_words"] == ("the", "be", "to", "of", "and", "that", "have", "with")
    repetition = filters.GopherRepetition({**recipe_defaults(GopherRepetitionFilter), "skip": ["max_dup_ngram_char_ratios"]})
    assert repetition.params["max_top_ngram_char_ratios"] == {2: 0.2, 3: 0.18, 4: 0.16}
    assert repetition.params["max_dup_ngram_char_ratios"] is None
    with pytest.raises(ValueError, match="skip names unknown rules"):
        filters.GopherQuality({**recipe_defaults(GopherQualityFilter), "skip": ["max_dup_line_ratio"]})


# -- length and regex ----------------------------------------------------------


def test_length_keep_bounds_are_inclusive_and_optional():
    lengths = np.array([0, 5, 10])
    assert length_keep(lengths, 5, None).tolist() == [False, True, True]
    assert length_keep(lengths, None, 5).tolist() == [True, True, False]
    assert length_keep(lengths, 5, 5).tolist() == [False, True, False]
    assert length_keep(lengths, None, None).tolist() == [True, True, True]


def test_regex_keep_include_exclude_and_case():
    texts = ["def f(): pass", "import os", "Lorem ipsum", ""]
    assert regex_keep(texts, [r"\bdef\b", "import"], ["ipsum"], False).tolist() == [True, True, False, False]
    assert regex_keep(texts, [], ["os$"], False).tolist() == [True, False, True, True]
    assert regex_keep(texts, [], [], False).tolist() == [True] * 4
    assert regex_keep(texts, ["LOREM"], [], False).tolist() == [False] * 4
    assert regex_keep(texts, ["LOREM"], [], ignore_case=True).tolist() == [False, False, True, False]
    with pytest.raises(re.error):
        regex_keep(texts, ["("], [], False)


def test_regex_keep_compiles_each_pattern_tuple_once():
    filters.regex._compiled.cache_clear()
    for _ in range(3):
        regex_keep(["a"], ["a", "b"], ["c"], False)
    info = filters.regex._compiled.cache_info()
    assert info.misses == 2 and info.hits == 4


# -- quality tokens --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words", "tokens"),
    [
        ("Hello, world... It's e.g. well-known -- x=1 __init__(self)", 9, 18),
        ("a...b a.. .... a.-b", 5, 12),  # "..." and "." tokens; ".." cuts words
        ("naïve café “quoted” ٣ …", 4, 7),
        ("", 0, 0),
        ("--- === ___", 0, 7),
    ],
)
def test_quality_tokens(text, words, tokens):
    found = re.findall(QUALITY_TOKEN_PATTERN, text)
    assert (sum(bool(re.match(r"[^\W_]", t)) for t in found), len(found)) == (words, tokens)
    assert count_words([text]).tolist() == [words]


def test_words_are_what_the_reference_says_they_are():
    """docs/reference.md (from the schema) defines the `words` unit; count_words counts exactly that."""
    described = LengthFilter.model_json_schema()["properties"]["unit"]["description"]
    assert described in (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    example, n = re.search(r"`([^`]+)` is (\d+) words", described).groups()
    assert count_words([example]).tolist() == [int(n)]
    # cut at whitespace, `-`, `=` and runs of dots; punctuation inside a word stays; marks alone are not words
    cases = {"don't": 1, "U.S.": 1, "1,000 items": 2, "x=1": 2, "a--b": 2, "e.g..x": 2, "foo_bar": 1, "-- ! ... #": 0}
    assert {text: int(count_words([text])[0]) for text in cases} == cases


FRAGMENTS = [
    "the", "of", "The", "and", "a", "x1", "42", "٣", "²", "naïve", "é", "e\u0301", "Σ", "İ", "日本",
    "-", "--", ".", "..", "...", "…", "•", "#", "_", "=", "'", "’", "“", "(", ")",
    " ", "  ", "\n", "\r\n", "\r", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\u2028", "\x85", "\xa0",
    "\x01", "\x02", "foo.bar", "U.S.", "don't", "__init__(self", "1,000",
]  # fmt: skip
fragment_texts = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
any_texts = st.one_of(fragment_texts, st.text(max_size=60))


def reference_quality(text: str, p: dict) -> int:
    """gopher_quality of one text, rule by rule in plain Python over QUALITY_TOKEN_PATTERN."""
    tokens = re.findall(QUALITY_TOKEN_PATTERN, text)
    words = [t for t in tokens if re.match(r"[^\W_]", t)]
    lines = text.splitlines()

    def ratio(a, b):
        return a / b if b else 0.0

    mean = ratio(sum(map(len, words)), len(words))
    fails = [
        len(words) < p["min_words"],
        len(words) > p["max_words"],
        mean < p["min_mean_word_length"],
        mean > p["max_mean_word_length"],
        ratio(text.count("#"), len(tokens)) > p["max_symbol_word_ratio"],
        ratio(text.count("...") + text.count("…"), len(tokens)) > p["max_symbol_word_ratio"],
        ratio(sum(x.lstrip().startswith(("-", "•")) for x in lines), len(lines)) > p["max_bullet_lines_ratio"],
        ratio(sum(x.rstrip().endswith(("...", "…")) for x in lines), len(lines)) > p["max_ellipsis_lines_ratio"],
        ratio(sum(bool(re.search(r"[^\W\d_]", w)) for w in words), len(tokens)) < p["min_alpha_words_ratio"],
        len(set(words) & set(p["stop_words"])) < p["min_stop_words"],
    ]
    return next((code for code, failed in enumerate(fails, start=1) if failed), 0)


# low thresholds, so that random short texts reach every rule
LOOSE = {
    "min_words": 2,
    "max_words": 30,
    "min_mean_word_length": 1.5,
    "max_mean_word_length": 5,
    "max_symbol_word_ratio": 0.2,
    "max_bullet_lines_ratio": 0.5,
    "max_ellipsis_lines_ratio": 0.25,
    "min_alpha_words_ratio": 0.5,
    "min_stop_words": 1,
    "stop_words": ("the", "of", "naïve"),
}


@settings(max_examples=300, deadline=None)
@given(st.lists(any_texts, min_size=1, max_size=4))
def test_quality_matches_the_plain_python_reference(texts):
    assert count_words(texts).tolist() == [
        sum(bool(re.match(r"[^\W_]", t)) for t in re.findall(QUALITY_TOKEN_PATTERN, text)) for text in texts
    ]
    assert gopher_quality(texts, **LOOSE).tolist() == [reference_quality(t, LOOSE) for t in texts]
    defaults = dict(QUALITY_DEFAULTS)
    assert gopher_quality(texts, **defaults).tolist() == [reference_quality(t, defaults) for t in texts]


# -- gopher quality: one test per rule -----------------------------------------------


def test_quality_defaults_and_rule_names():
    assert QUALITY_DEFAULTS["min_words"] == 50 and QUALITY_DEFAULTS["max_words"] == 100_000
    assert len(GOPHER_QUALITY_RULES) == 10
    assert gopher_quality([], **QUALITY_DEFAULTS).dtype == np.int8 and gopher_quality([], **QUALITY_DEFAULTS).shape == (0,)
    assert quality(prose(50)) == "kept"


def test_min_words():
    assert quality(prose(49)) == "min_words"
    assert quality(prose(50)) == "kept"
    assert quality("") == "min_words"
    assert quality(prose(10), min_words=None) == "kept"
    assert quality(prose(10), min_words=10) == "kept"


def test_max_words():
    assert quality(prose(61), max_words=60) == "max_words"
    assert quality(prose(60), max_words=60) == "kept"
    assert quality(prose(100_001)) == "max_words"
    assert quality(prose(100_001), max_words=None) == "kept"


def test_min_mean_word_length():
    assert quality(" ".join(["the", "of", "to", "be", "an", "it"] * 10)) == "min_mean_word_length"
    assert quality(" ".join(["the", "and", "cat", "sat"] * 13)) == "kept"  # mean exactly 3
    assert quality(" ".join(["the", "of", "to", "be", "an", "it"] * 10), min_mean_word_length=None) == "kept"


def test_max_mean_word_length():
    words = ["the", "incomprehensibles", "and", "incomprehensibles"] + ["abcdefghij"] * 46  # 500 / 50 letters
    assert quality(" ".join(words)) == "kept"
    assert quality(" ".join(words[:-1] + ["abcdefghijk"])) == "max_mean_word_length"
    assert quality(" ".join(words[:-1] + ["abcdefghijk"]), max_mean_word_length=None) == "kept"


def test_hash_ratio():
    # "#" is a symbol token: 10 of 100 tokens pass, 11 of 101 fail
    assert quality(prose(90) + " #" * 10) == "kept"
    assert quality(prose(90) + " #" * 11) == "max_symbol_word_ratio_hash"
    assert quality(prose(90) + " #" * 11, max_symbol_word_ratio=None) == "kept"


def test_ellipsis_ratio():
    def text(k):  # "..." and "…" are one token each, inside the line
        words = prose(90).split()
        for i in range(k):
            words.insert(1 + 8 * i, "..." if i % 2 else "…")
        return " ".join(words)

    assert quality(text(10)) == "kept"
    assert quality(text(11)) == "max_symbol_word_ratio_ellipsis"


def test_bullet_lines_ratio():
    lines = [f"{'-' if i % 2 else '  •'} {prose(6)}" for i in range(10)]
    assert quality("\n".join(lines)) == "max_bullet_lines_ratio"
    assert quality("\n".join([prose(6), *lines[1:]])) == "kept"  # 9 of 10 = 0.9
    assert quality("\n".join(lines), max_bullet_lines_ratio=None) == "kept"
    # two lines (a final line break starts no line); words and stop words not checked
    loose = {"min_words": None, "min_stop_words": None, "min_alpha_words_ratio": None, "max_bullet_lines_ratio": 0.7}
    assert quality("- river flows\r\n  • green hills\n", **loose) == "max_bullet_lines_ratio"
    assert quality("- river flows\r\n\n  • green hills\n", **loose) == "kept"  # 2 of 3


def test_ellipsis_lines_ratio():
    def text(k):
        return "\r\n".join(prose(6) + (" ... " if i < k else "") for i in range(10))

    assert quality(text(4)) == "max_ellipsis_lines_ratio"
    assert quality(text(3)) == "kept"  # 3 of 10 = 0.3
    assert quality(text(4).replace("...", "…"), max_ellipsis_lines_ratio=None) == "kept"


def test_alpha_words_ratio():
    assert quality(prose(48) + " 123" * 12) == "kept"  # 48 / 60 = 0.8
    assert quality(prose(48) + " 123" * 13) == "min_alpha_words_ratio"
    assert quality(prose(60) + " , ." * 8) == "min_alpha_words_ratio"  # symbols are tokens: 60 / 76
    assert quality(prose(48) + " 123" * 13, min_alpha_words_ratio=None) == "kept"


def test_stop_words():
    text = "the " + " ".join(["river", "flows", "green", "hills", "towns"] * 10)
    assert quality(text) == "min_stop_words"
    assert quality("The Of " + text) == "min_stop_words"  # case-sensitive
    assert quality("of " + text) == "kept"
    assert quality(text, stop_words=["river", "hills"]) == "kept"
    assert quality(text, min_stop_words=None) == "kept"


def test_quality_unknown_parameter():
    with pytest.raises(TypeError, match="max_word_count"):
        gopher_quality(["x"], **QUALITY_DEFAULTS, max_word_count=3)


# -- gopher repetition ----------------------------------------------------------------

PARAGRAPHS = "one two\n\nthree four five\n\none two\n\nsix"  # len 38
LINES = "x = 1\ny = 2\nx = 1\n\nx = 1\nz"  # len 26; lines x = 1, y = 2, x = 1, x = 1, z
# words: alpha beta alpha beta gamma alpha beta gamma delta (42 characters)
NGRAMS = "Alpha beta, alpha BETA gamma; alpha beta gamma delta."
PHRASE = "red fox eats big ripe plums under old oak trees"  # 10 words, 38 characters
REPEATED = f"{PHRASE}, then {PHRASE} again"  # 85 word characters
OVERLAP = "one two three one two three one two three four"  # 37 word characters


@pytest.mark.parametrize(
    ("text", "rule", "ratio"),
    [
        (PARAGRAPHS, "max_dup_para_ratio", 1 / 4),
        (PARAGRAPHS, "max_dup_para_char_ratio", 7 / 38),
        (LINES, "max_dup_line_ratio", 2 / 5),
        (LINES, "max_dup_line_char_ratio", 10 / 26),
        (NGRAMS, "max_top_1gram_char_ratio", 3 * 5 / 42),  # "alpha" and "beta" 3 times: the longer
        (NGRAMS, "max_dup_1gram_char_ratio", 37 / 42),  # all but "delta"
        (NGRAMS, "max_top_2gram_char_ratio", 3 * 9 / 42),  # "alpha beta" 3 times beats "beta gamma" twice
        (NGRAMS, "max_top_3gram_char_ratio", 2 * 14 / 42),  # "alpha beta gamma"
        ("a b a b a b cccc dddd cccc dddd", "max_top_2gram_char_ratio", 3 * 2 / 22),  # the most frequent, not longest
        (REPEATED, "max_top_2gram_char_ratio", 2 * 10 / 85),  # ties: the longest, "plums under"
        (REPEATED, "max_top_3gram_char_ratio", 2 * 14 / 85),  # "ripe plums under"
        (REPEATED, "max_top_4gram_char_ratio", 2 * 17 / 85),  # "big ripe plums under"
        *((REPEATED, f"max_dup_{n}gram_char_ratio", 2 * 38 / 85) for n in range(5, 11)),
        (OVERLAP, "max_dup_5gram_char_ratio", 33 / 37),  # overlapping n-grams count each character once
    ],
)
def test_repetition_rule_at_its_threshold(text, rule, ratio):
    assert rule in GOPHER_REPETITION_RULES
    assert repetition(text, **only(rule, ratio)) == "kept"
    assert repetition(text, **only(rule, ratio * (1 - 1e-9))) == rule


def test_repetition_with_default_thresholds():
    assert repetition("\n\n".join(["same para", "same para", "same para", "other"])) == "max_dup_para_ratio"
    long = " ".join(["a long paragraph that is repeated once"] * 3)
    assert repetition("\n\n".join([long, "b", "c", long])) == "max_dup_para_char_ratio"
    assert repetition("\n".join(["print(x)"] * 5 + list("abcde"))) == "max_dup_line_ratio"
    long_line = "a rather long line that occurs twice in the text"
    assert repetition("\n".join([long_line, *"abcdefgh", long_line])) == "max_dup_line_char_ratio"
    assert repetition(NGRAMS) == "max_top_2gram_char_ratio"
    # a 5-gram repeated once in 57 five-letter words: 50/285 duplicated, top 4-gram 40/285
    unique = [f"w{i:04d}" for i in range(47)]
    rep = ["alpha", "bravo", "charl", "delta", "echos"]
    assert repetition(" ".join(rep + unique[:23] + rep + unique[23:])) == "max_dup_5gram_char_ratio"
    assert repetition(prose(200)) == "max_top_2gram_char_ratio"
    assert repetition(" ".join(f"w{i}" for i in range(300))) == "kept"


def test_repetition_parameters():
    assert len(GOPHER_REPETITION_RULES) == 4 + 10 + 10 + 2
    assert repetition(NGRAMS, max_top_ngram_char_ratios={3: 0.5}) == "max_top_3gram_char_ratio"
    assert repetition(NGRAMS, max_top_ngram_char_ratios={2: None, 3: None}) == "kept"
    assert repetition(NGRAMS, max_top_ngram_char_ratios=None) == "kept"
    # sizes above 10 share one code per kind, checked after the named sizes
    no_ngrams = {"max_top_ngram_char_ratios": None, "max_dup_ngram_char_ratios": None}
    assert repetition(REPEATED, **{**no_ngrams, "max_dup_ngram_char_ratios": {11: 0.5}}) == "kept"
    twelve = f"{PHRASE} one two, then {PHRASE} one two again"  # a 12-gram of 44 characters twice, in 97
    assert repetition(twelve, **{**no_ngrams, "max_top_ngram_char_ratios": {12: 88 / 97}}) == "kept"
    assert repetition(twelve, **{**no_ngrams, "max_top_ngram_char_ratios": {12: 0.9}}) == "max_top_ngram_char_ratio"
    assert repetition(twelve, **{**no_ngrams, "max_dup_ngram_char_ratios": {13: 0.1}}) == "kept"
    assert repetition(twelve, **{**no_ngrams, "max_dup_ngram_char_ratios": {12: 0.9}}) == "max_dup_ngram_char_ratio"
    both = {"max_top_ngram_char_ratios": {12: 0.1}, "max_dup_ngram_char_ratios": {5: 0.5}}
    assert repetition(twelve, **{**no_ngrams, **both}) == "max_dup_5gram_char_ratio"
    for bad in ({0: 0.1}, {True: 0.1}, {"2": 0.1}):
        with pytest.raises(ValueError, match="sizes"):
            gopher_repetition(["x"], **{**REPETITION_DEFAULTS, "max_dup_ngram_char_ratios": bad})
    with pytest.raises(TypeError):
        gopher_repetition(["x"], **{**REPETITION_DEFAULTS, "max_top_ngram_char_ratios": [0.2]})
    with pytest.raises(TypeError, match="dup_line_frac"):
        gopher_repetition(["x"], **REPETITION_DEFAULTS, dup_line_frac=0.3)


def test_repetition_of_empty_and_blank_texts():
    assert gopher_repetition(["", "\n\n\n", "   ", "x"], **REPETITION_DEFAULTS).tolist() == [0, 0, 0, 0]
    assert gopher_repetition([], **REPETITION_DEFAULTS).shape == (0,)


# -- batching ----------------------------------------------------------------------


def test_results_do_not_depend_on_the_batch(monkeypatch):
    mixed = "naïve Σίσυφος “x” …\n- a\n- b"
    texts = ["", prose(60), "", NGRAMS, mixed, REPEATED, LINES * 40, prose(300), "日本語 x", ""]
    ngrams = ngram_set([PHRASE, "日本語 x"], 3)

    def run():
        return [
            count_words(texts),
            gopher_quality(texts, **QUALITY_DEFAULTS),
            gopher_repetition(texts, **REPETITION_DEFAULTS),
            exact_keys(texts, normalize=True),
            minhash_signatures(texts, **MINHASH),
            contaminated(texts, ngrams, 3),
        ]

    whole = run()
    one_by_one = [np.concatenate(parts) for parts in zip(*[_single(t, ngrams) for t in texts], strict=True)]
    monkeypatch.setattr(filters.text, "_CHUNK_CHARS", 40)  # a chunk per text or two
    monkeypatch.setattr(filters.dedup, "_MINHASH_BLOCK", 5)
    chunked = run()
    for a, b, c in zip(whole, one_by_one, chunked, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def _single(text, ngrams):
    return [
        count_words([text]),
        gopher_quality([text], **QUALITY_DEFAULTS),
        gopher_repetition([text], **REPETITION_DEFAULTS),
        exact_keys([text], normalize=True),
        minhash_signatures([text], **MINHASH),
        contaminated([text], ngrams, 3),
    ]


# -- exact dedup ---------------------------------------------------------------------


def test_normalize_for_dedup():
    assert normalize_for_dedup("  Hello,\tWORLD!!  foo_bar\n") == "hello world foobar"
    assert normalize_for_dedup("Ça\u00a0va — très\u2028bien…") == "ça va très bien"
    assert normalize_for_dedup("") == normalize_for_dedup(" !?\n") == ""
    assert exact_keys(["ΟΔΟΣ."], normalize=True)[0].tobytes() == xxhash.xxh3_128_digest("οδος".encode())


def test_exact_keys_collide_on_normalised_variants_only():
    variants = ["Hello,   World!", "hello world", "HELLO\tworld...", " hello  world\n", "Hello World?"]
    keys = exact_keys(variants, normalize=True)
    assert keys.dtype == np.dtype("V16") and keys.shape == (5,)
    assert len({k.tobytes() for k in keys}) == 1
    assert keys[0].tobytes() == xxhash.xxh3_128_digest(b"hello world")
    raw = exact_keys(variants, normalize=False)
    assert len({k.tobytes() for k in raw}) == 5
    assert raw[1].tobytes() == xxhash.xxh3_128_digest(b"hello world")
    assert exact_keys([], normalize=True).shape == (0,)
    assert exact_keys(["lone \ud800 surrogate"], normalize=False).shape == (1,)


def test_exact_dedup_index_returns_the_first_id():
    keys = exact_keys(["a b", "c", "A, b!", "c", "d"], normalize=True)
    index = ExactDedupIndex()
    assert [index.check_and_add(k) for k in keys] == [None, None, 0, 1, None]
    assert len(index) == 3
    assert index.check_and_add(b"raw") is None and index.check_and_add(b"raw") == 3


@settings(max_examples=200, deadline=None)
@given(any_texts, any_texts)
def test_exact_keys_hash_the_normalised_text(a, b):
    ka, kb = exact_keys([a, b], normalize=True)
    assert ka.tobytes() == xxhash.xxh3_128_digest(normalize_for_dedup(a).encode("utf-8", "surrogatepass"))
    assert (ka.tobytes() == kb.tobytes()) == (normalize_for_dedup(a) == normalize_for_dedup(b))


# -- words and shingles ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(any_texts)
def test_word_hashes_follow_the_lowercased_words(text):
    words = re.findall(r"\w+", text.lower())
    hashes = word_hashes(text)
    assert hashes.dtype == np.uint64 and len(hashes) == len(words)
    assert len(set(zip(words, hashes.tolist(), strict=True))) == len(set(words)) == len(set(hashes.tolist()))


def test_word_hashes_values():
    assert word_hashes("ΟΔΟΣ").tolist() == word_hashes("οδος").tolist() != word_hashes("οδοσ").tolist()
    assert word_hashes("Straße STRASSE, straße!").tolist()[::2] == word_hashes("straße straße").tolist()
    long = "x" * 100
    assert word_hashes(f"{long} {long}y {long}")[0] == word_hashes(long)[-1] != word_hashes(long + "y")[0]
    assert word_hashes("").size == 0 and word_hashes("!!").size == 0


def test_shingle_hashes():
    h = word_hashes("a b c d e f")
    assert shingle_hashes(h, 3).size == 4
    assert shingle_hashes(h, 3)[1] == shingle_hashes(word_hashes("b c d"), 3)[0]
    assert shingle_hashes(h, 6).size == 1 and shingle_hashes(h, 10).size == 1  # fewer words: one shingle
    assert shingle_hashes(h, 10)[0] == shingle_hashes(h, 6)[0]
    assert shingle_hashes(h[:0], 3).size == 0
    assert len(set(shingle_hashes(h, 1).tolist()) & set(h.tolist())) == 0  # mixed, not the word hashes
    with pytest.raises(ValueError):
        shingle_hashes(h, 0)


# -- near dedup ---------------------------------------------------------------------------


def _document(rng: random.Random, n: int = 200) -> list[str]:
    return [rng.choice(VOCAB) + str(rng.randrange(50)) for _ in range(n)]


def test_near_duplicates_are_found_and_the_first_is_kept():
    rng = random.Random(0)
    a, b = _document(rng), _document(rng)
    a_edit = list(a)
    for i in (20, 90, 160):
        a_edit[i] = "changed"
    docs = [" ".join(a), " ".join(b), " ".join(a_edit).upper(), " ".join(b[:120])]
    signatures = minhash_signatures(docs, **MINHASH)
    assert signatures.shape == (4, 128) and signatures.dtype == np.uint32
    assert (signatures[0] == signatures[2]).mean() >= 0.8
    assert (signatures[0] == signatures[1]).mean() < 0.1
    keys = lsh_band_keys(signatures, 16)
    index = NearDedupIndex(bands=16, threshold=0.8)
    # a, unrelated b, a with three words changed (Jaccard 0.86), b's first 120 words (Jaccard 0.59)
    assert [index.check_and_add(k, s) for k, s in zip(keys, signatures, strict=True)] == [None, None, 0, None]
    assert len(index) == 3
    loose = NearDedupIndex(bands=16, threshold=0.5)
    assert [loose.check_and_add(k, s) for k, s in zip(keys, signatures, strict=True)] == [None, None, 0, 1]


def test_near_dedup_index_returns_the_earliest_close_document():
    a = np.zeros(10, np.uint32)
    b = a.copy()
    b[5:8] = 1  # 0.7 like a: added
    c = a.copy()
    c[5] = 1  # 0.9 like a, 0.8 like b
    sig = np.stack([a, b, c])
    keys = lsh_band_keys(sig, 2)
    index = NearDedupIndex(bands=2, threshold=0.8)
    assert [index.check_and_add(k, s) for k, s in zip(keys, sig, strict=True)] == [None, None, 0]


def test_near_dedup_index_arguments():
    with pytest.raises(ValueError):
        NearDedupIndex(bands=0, threshold=0.8)
    with pytest.raises(ValueError):
        NearDedupIndex(bands=4, threshold=1.5)
    index = NearDedupIndex(bands=4, threshold=0.8)
    sig = minhash_signatures(["a b c d e f"], **{**MINHASH, "num_perm": 8})
    with pytest.raises(ValueError, match="band keys"):
        index.check_and_add(lsh_band_keys(sig, 2)[0], sig[0])
    assert index.check_and_add(lsh_band_keys(sig, 4)[0], sig[0]) is None
    assert index.check_and_add(lsh_band_keys(sig, 4)[0], sig[0]) == 0


def test_minhash_signatures():
    sig = minhash_signatures(["", "!!", "one", "one two three four five six", "One, two three four five six."], **MINHASH)
    assert (sig[:2] == 0xFFFFFFFF).all()
    assert (sig[2] != 0xFFFFFFFF).any()
    assert np.array_equal(sig[3], sig[4])
    assert minhash_signatures([], **{**MINHASH, "num_perm": 16}).shape == (0, 16)
    assert not np.array_equal(minhash_signatures(["a b"], **{**MINHASH, "seed": 1}), minhash_signatures(["a b"], **{**MINHASH, "seed": 2}))
    assert minhash_signatures(["a b c"], **{**MINHASH, "num_perm": 3, "shingle_size": 2}).shape == (1, 3)
    for bad in ({"num_perm": 0}, {"shingle_size": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            minhash_signatures(["a"], **{**MINHASH, **bad})


def test_lsh_band_keys():
    sig = np.full((2, 8), 7, np.uint32)
    sig[1, 6:] = 8
    keys = lsh_band_keys(sig, 4)
    assert keys.shape == (2, 4) and keys.dtype == np.uint64
    assert len(set(keys[0].tolist())) == 4  # equal rows in different bands differ
    assert keys[0, :3].tolist() == keys[1, :3].tolist() and keys[0, 3] != keys[1, 3]
    with pytest.raises(ValueError, match="divisor"):
        lsh_band_keys(sig, 3)
    with pytest.raises(ValueError, match="divisor"):
        lsh_band_keys(sig, 0)
    with pytest.raises(ValueError, match="2-D"):
        lsh_band_keys(sig[0], 4)


def test_counting_equal_keys_that_share_their_high_bits():
    # three keys: high bits are kept beside positions, 8 and 9 share them
    assert filters.repetition._occurrences(np.array([8, 9, 8], np.uint64)).tolist() == [2, 1, 2]
    keys = np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint64) << np.uint64(40)
    assert filters.repetition._occurrences(keys).tolist() == np.bincount(keys >> np.uint64(40))[keys >> np.uint64(40)].tolist()


# -- decontamination --------------------------------------------------------------------


def test_ngram_set_and_contaminated():
    evaluation = ["The quick brown fox jumps over the lazy dog.", "hello world"]
    grams = ngram_set(evaluation, 5)
    assert grams.dtype == np.uint64 and grams.size == 5 + 1
    assert (np.diff(grams.astype(np.float64)) > 0).all()
    training = [
        "Yesterday, the QUICK brown fox -- jumps over a fence.",  # shares "the quick brown fox jumps"
        "A quick brown fox jumped over the lazy dog.",  # no 5-gram in common
        "Hello, World!",  # as short as the short evaluation text
        "hello world again today friends",
        "",
    ]
    assert contaminated(training, grams, 5).tolist() == [True, False, True, False, False]
    assert contaminated(training, np.zeros(0, np.uint64), 5).tolist() == [False] * 5
    assert ngram_set([], 5).size == 0
    with pytest.raises(ValueError, match="sorted"):
        contaminated(training, grams[::-1], 5)
    with pytest.raises(ValueError):
        ngram_set(evaluation, 0)


# -- determinism across processes -------------------------------------------------------

_CHILD = """
import json, sys
from recipec.runtime import filters as f
from recipec.schema.filters import GopherQualityFilter, GopherRepetitionFilter, MinhashDedupFilter
texts = json.loads(sys.stdin.read())
m = MinhashDedupFilter(type="minhash_dedup").model_dump()
sig = f.minhash_signatures(texts, m["shingle_size"], m["num_perm"], m["seed"])
quality = f.GopherQuality(GopherQualityFilter(type="gopher_quality").model_dump())
repetition = f.GopherRepetition(GopherRepetitionFilter(type="gopher_repetition").model_dump())
print(json.dumps({
    "sig": sig.tolist(),
    "bands": f.lsh_band_keys(sig, 16).tolist(),
    "exact": [k.tobytes().hex() for k in f.exact_keys(texts, normalize=True)],
    "words": [f.word_hashes(t).tolist() for t in texts],
    "quality": quality.verdicts(f.Documents(texts)).tolist(),
    "repetition": repetition.verdicts(f.Documents(texts)).tolist(),
}))
"""


def test_hashes_are_the_same_in_every_process():
    texts = [prose(80), "Ünïcödé wörds — “ÄÖÜ” café Σίσυφος İstanbul ﬁne ½ ٣", REPEATED, ""]
    outputs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]
    sig = minhash_signatures(texts, **MINHASH)
    assert outputs[0]["sig"] == sig.tolist()
    assert outputs[0]["exact"] == [k.tobytes().hex() for k in exact_keys(texts, normalize=True)]
