"""The byte-level BPE tokenizer: size, lossless round trip, determinism, save/load."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from recipec.runtime.data import builtin_texts  # noqa: E402
from recipec.runtime.tokenizer import EOS_TOKEN, PAD_TOKEN, train_bpe  # noqa: E402

VOCAB = 1000

TEXTS = [
    "ASCII with odd spacing:  two spaces , a comma . and\ttabs\nand newlines\n\n",
    "Non-ASCII: naïve café, Größe, Ελληνικά, русский, 日本語のテキスト, emoji 🙂🚀, and \u200b zero width.",
    "def f(x):\n    return x ** 2  # never seen? \x00\x7f",
    "",
]


@pytest.fixture(scope="module")
def corpus():
    return builtin_texts("python-docs", limit=40)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_bpe(corpus, VOCAB)


def test_vocab_size_and_special_tokens(tok):
    assert len(tok) == VOCAB
    assert tok.backend_tokenizer.get_vocab_size() == VOCAB
    assert tok.eos_token == EOS_TOKEN and tok.bos_token == EOS_TOKEN
    assert tok.pad_token == PAD_TOKEN
    assert tok.unk_token is None
    assert tok.eos_token_id == tok.convert_tokens_to_ids(EOS_TOKEN)
    assert tok.pad_token_id == tok.convert_tokens_to_ids(PAD_TOKEN)
    assert tok.pad_token_id != tok.eos_token_id
    # BPE actually merged something: common words are single tokens
    assert len(tok("the", add_special_tokens=False)["input_ids"]) == 1


def test_encode_adds_no_special_tokens(tok):
    ids = tok("hello world")["input_ids"]
    assert tok.eos_token_id not in ids and tok.pad_token_id not in ids


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert all(0 <= i < VOCAB for i in ids)
    assert tok.decode(ids) == text


def test_special_tokens_are_atomic(tok):
    ids = tok("a" + EOS_TOKEN + "b", add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id in ids


def test_deterministic(corpus, tok):
    again = train_bpe(list(corpus), VOCAB)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    other = train_bpe(list(corpus), VOCAB - 100)
    assert other.backend_tokenizer.to_str() != tok.backend_tokenizer.to_str()


def test_save_and_autotokenizer_round_trip(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == VOCAB
    assert (loaded.eos_token, loaded.bos_token, loaded.pad_token) == (EOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert loaded(text, add_special_tokens=False)["input_ids"] == ids
        assert loaded.decode(ids) == text


def test_accepts_generator_and_validates():
    small = train_bpe((t for t in ["abc abd abe"] * 20), 300)
    assert small.decode(small("abd abc", add_special_tokens=False)["input_ids"]) == "abd abc"
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["x"], 100)
    with pytest.raises(ValueError, match="min_frequency"):
        train_bpe(["x"], 300, min_frequency=0)
