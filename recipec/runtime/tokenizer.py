"""Train a small byte-level BPE tokenizer from the training corpus.

Recipes that train a model from scratch often have no suitable pretrained
tokenizer; a byte-level BPE (GPT-2 style) trained on the corpus itself is
cheap (about a second per megabyte), can encode any text (every byte is in the
initial alphabet, so there is no unknown token) and is deterministic, so the
same recipe and data give the same vocabulary. The result is wrapped as a
transformers fast tokenizer so it saves and loads with ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` like any other.

The data stage's other dealings with tokenizers live here too: loading one with errors
that name the broken file (:func:`load_tokenizer`, :func:`load_for_stage`), the
fingerprint that goes into the data cache's key (:func:`fingerprint`) and encoding
documents in batches of bounded size (:func:`encode`).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import TYPE_CHECKING, Any, Iterable

from .readers import DataError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import transformers

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
) -> "transformers.PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer on ``texts``.

    Uses the ``tokenizers`` library: ByteLevel pre-tokenizer (GPT-2 regex,
    no prefix space), ByteLevel decoder, the 256-symbol byte alphabet as the
    initial alphabet and the special tokens :data:`EOS_TOKEN` (id 0) and
    :data:`PAD_TOKEN` (id 1). ``EOS_TOKEN`` doubles as BOS. No special tokens
    are added by ``encode``; the data pipeline appends EOS itself.

    The vocabulary can come out smaller than ``vocab_size`` when the corpus
    has too few pairs occurring at least ``min_frequency`` times.

    Args:
        texts: Training documents (any iterable; consumed once).
        vocab_size: Target vocabulary size including the 256 byte symbols and
            the two special tokens.
        min_frequency: Minimum count for a pair to be merged.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` (transformers 5 may report
        its class as ``TokenizersBackend``) with eos/bos/pad set and no unk.

    Raises:
        ValueError: If ``vocab_size`` is smaller than the byte alphabet plus
            the special tokens, or ``min_frequency < 1``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(SPECIAL_TOKENS)
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(f"vocab_size must be an integer >= {minimum} (256 bytes + special tokens), got {vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=sorted(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------- loading

# the JSON files a tokenizer directory may hold; transformers parses each without saying which failed
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json")


def _check_tokenizer_json(path: str) -> None:
    """Name the file (and line) of a local tokenizer whose JSON does not parse, before transformers trips on it."""
    where = pathlib.Path(path)
    files = [where / name for name in TOKENIZER_JSON] if where.is_dir() else [where] if where.suffix == ".json" else []
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DataError(f"tokenizer: {file}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"tokenizer: {file}: not valid UTF-8 (byte {e.start})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"tokenizer: {file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise DataError(f"tokenizer: {file}: expected a JSON object, got {type(data).__name__}")


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained``, with a DataError naming the file for a tokenizer that does not load.

    Raises:
        DataError: a JSON file of a local tokenizer does not parse (file, line and column), or
            transformers cannot load the tokenizer at all (the path and its error).
    """
    from transformers import AutoTokenizer

    _check_tokenizer_json(path)
    try:
        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 -- transformers raises anything from a bad tokenizer; name it, not a traceback
        raise DataError(f"tokenizer: {path}: cannot load the tokenizer ({type(e).__name__}: {e})") from None


def load_for_stage(settings: dict) -> Any:
    """The tokenizer of a stage request's ``{"path", "revision", "trust_remote_code"}``, ready to separate documents.

    Raises:
        DataError: it does not load, or it has no end-of-text token. A missing padding
            token becomes the end-of-text token.
    """
    tok = load_tokenizer(settings["path"], settings["revision"], bool(settings["trust_remote_code"]))
    prepare_chat(tok, settings.get("chat_template"), settings.get("special_tokens") or ())
    if tok.eos_token_id is None:
        raise DataError(f"the tokenizer {settings['path']!r} has no end-of-text token; documents cannot be separated")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def prepare_chat(tokenizer: Any, chat_template: str | None, special_tokens: Any = ()) -> int:
    """Give a tokenizer the recipe's chat markers and template (``tokenizer.special_tokens``, ``chat_template``).

    Tokens it already has are not added again. The same call in the data stage and the
    training script gives both the same ids.

    Returns:
        How many tokens were added (the model's embeddings grow by as many).
    """
    new = [t for t in special_tokens if t not in tokenizer.get_vocab()]
    added = tokenizer.add_tokens(new, special_tokens=True) if new else 0  # whole, never split or normalised
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return added


def fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides a tokenizer's ids: its serialised model and special tokens."""
    digest = hashlib.sha256(b"recipec-tokenizer-v1\0")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:  # a slow tokenizer: its vocabulary
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, tokenizer.pad_token_id]).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- encoding

ENCODE_CHARS = 1 << 20
"""Characters per tokenizer call: a call's encodings cost about 100 bytes a token, so memory stays bounded."""


def encode(tokenizer: Any, texts: list[str]) -> list["np.ndarray"]:
    """Token ids (uint32) of each text, without special tokens, in calls of about :data:`ENCODE_CHARS` characters."""
    out: list[np.ndarray] = []
    start = size = 0
    for end, text in enumerate(texts, 1):
        size += len(text)
        if size >= ENCODE_CHARS or end == len(texts):
            out += _encode_slice(tokenizer, texts[start:end])
            start, size = end, 0
    return out


def _encode_slice(tokenizer: Any, texts: list[str]) -> list["np.ndarray"]:
    import numpy as np

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encodings]
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return [np.asarray(x, dtype=np.uint32) for x in ids]
