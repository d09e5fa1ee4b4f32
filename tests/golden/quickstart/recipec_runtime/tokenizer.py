"""Train a small byte-level BPE tokenizer from the training corpus.

Recipes that train a model from scratch often have no suitable pretrained
tokenizer; a byte-level BPE (GPT-2 style) trained on the corpus itself is
cheap (about a second per megabyte), can encode any text (every byte is in the
initial alphabet, so there is no unknown token) and is deterministic, so the
same recipe and data give the same vocabulary. The result is wrapped as a
transformers fast tokenizer so it saves and loads with ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
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
