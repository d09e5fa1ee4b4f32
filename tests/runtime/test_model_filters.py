"""The data stage's model filters (`perplexity`, `color_filter`): scores equal to transformers' own loss, the
documents they keep, their report and scores file, the cache key, and the errors."""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")
torch = pytest.importorskip("torch")

import pyarrow as pa  # noqa: E402

from recipec.runtime import model_scores, stage  # noqa: E402
from recipec.runtime.filters import ColorFilter, Perplexity, make_filter  # noqa: E402
from recipec.runtime.readers import DataError  # noqa: E402
from recipec.runtime.tokenizer import train_bpe  # noqa: E402

from .test_stage import by_label, jsonl, prose, request, run, tokenizer_dir  # noqa: E402,F401 (tokenizer_dir: a fixture)

CODE = ["def f{i}(x):", "return x +", "for k in range({i}):", "print(k)", "if x > {i}:", "x = x * 2"]


def code(i: int, n: int = 12) -> str:
    """A document of the target domain: code-like lines, unlike the prose the other documents are."""
    rng = np.random.default_rng(1000 + i)
    return "\n".join(CODE[k].format(i=i) for k in rng.integers(0, len(CODE), n))


def tiny_llama(tokenizer, seed: int, positions: int = 256):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def fine_tune(model, tokenizer, texts, steps: int = 40):
    """A few steps of next-token training on ``texts``: the conditional model of CoLoR-Filter."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        ids = torch.tensor([tokenizer(texts[step % len(texts)])["input_ids"]])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tokenizer, a prior model (random) and the prior fine-tuned on code-like text, each saved with the tokenizer."""
    root = tmp_path_factory.mktemp("scorers")
    tok = train_bpe([prose(i) for i in range(200)] + [code(i) for i in range(50)], 400)
    tok.bos_token = tok.eos_token  # every document is scored from its first token on
    prior = tiny_llama(tok, 0)
    prior.save_pretrained(root / "prior")
    tok.save_pretrained(root / "prior")
    conditional = fine_tune(tiny_llama(tok, 0), tok, [code(i) for i in range(100, 120)])
    conditional.save_pretrained(root / "conditional")
    tok.save_pretrained(root / "conditional")
    return root, tok


def oracle_nll(path, texts, max_tokens):
    """transformers' causal-LM loss of each text alone (its mean over the predicted tokens), NaN under 2 tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out = []
    for text in texts:
        ids = tok(text, truncation=True, max_length=max_tokens)["input_ids"]
        if len(ids) < 2:
            out.append(float("nan"))
            continue
        with torch.no_grad():
            t = torch.tensor([ids])
            out.append(model(input_ids=t, labels=t).loss.item())
    return np.array(out)


def perplexity(model, **kw):
    return {"type": "perplexity", "model": model, "revision": None, "min": None, "max": None, "rate": None,
            "max_tokens": 64, "batch_size": 3, "dtype": "float32", **kw}


def color(prior, conditional, rate, **kw):
    return {"type": "color_filter", "prior_model": prior, "prior_revision": None, "conditional_model": conditional,
            "conditional_revision": None, "rate": rate, "max_tokens": 64, "batch_size": 4, "dtype": "float32", **kw}


def scores_file(out, report_filter):
    with pa.OSFile(str(out.dir / report_filter["scores"]["file"])) as f:
        return pa.ipc.open_stream(f).read_all().to_pydict()


# --------------------------------------------------------------------------- the scores


def test_batched_scores_equal_transformers_loss_of_each_document_alone(models):
    root, _ = models
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [prose(i, n) for i, n in enumerate([3, 80, 15, 1, 40, 7, 120])] + ["", code(1), "the"]
    model = AutoModelForCausalLM.from_pretrained(root / "prior", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(root / "prior")
    nll, lengths = model_scores.mean_nll(model, tok, texts, max_tokens=48, batch_size=3)
    expected = oracle_nll(root / "prior", texts, 48)
    assert np.isnan(nll).tolist() == np.isnan(expected).tolist()
    assert np.isnan(nll).sum() >= 1  # the empty text: one token (BOS) or none, no prediction
    np.testing.assert_allclose(nll[~np.isnan(nll)], expected[~np.isnan(expected)], rtol=1e-5, atol=1e-6)
    assert lengths.max() == 48  # truncated at max_tokens, as the oracle's tokenizer call cuts them


def test_perplexity_bounds_keep_what_the_oracle_says_and_report_every_score(tmp_path, models, tokenizer_dir):
    root, _ = models
    texts = [prose(i, 20 + 7 * i) for i in range(10)] + [code(i) for i in range(6)]
    jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    expected = np.exp(oracle_nll(root / "prior", texts, 64))
    low, high = np.quantile(expected, 0.2), np.quantile(expected, 0.7)
    f = perplexity(str(root / "prior"), min=float(low), max=float(high))
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl"}], [f]))
    rep = by_label(out.report, "filters[0]")
    keep = (expected >= low) & (expected <= high)
    assert rep["docs_kept"] == keep.sum() and rep["docs_in"] == len(texts)
    assert rep["reasons"] == {"below_min": int((expected < low).sum()), "above_max": int((expected > high).sum())}
    s = rep["scores"]
    assert s["value"] == "perplexity" and s["scored"] == len(texts) and s["device"] == "cpu"
    assert s["models"]["model"]["path"] == str(root / "prior") and s["models"]["model"]["tokens"] > 0
    assert s["all"]["min"] == pytest.approx(expected.min(), rel=1e-5)
    assert s["kept"]["max"] == pytest.approx(expected[keep].max(), rel=1e-5)
    table = scores_file(out, rep)
    assert table["document"] == list(range(len(texts)))
    assert table["id"][3].endswith("d.jsonl:4")
    np.testing.assert_allclose(table["perplexity"], expected, rtol=1e-5)
    assert [r == "" for r in table["reason"]] == keep.tolist()
    assert all("(perplexity " in e["reason"] for e in rep["examples"])


def test_perplexity_rate_keeps_the_lowest_and_only_scores_what_reaches_it(tmp_path, models, tokenizer_dir):
    root, _ = models
    texts = [prose(i, 10 + 9 * i) for i in range(12)]
    jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    src = {"path": "d.jsonl", "filters": [{"type": "length", "unit": "words", "min": 40, "max": None}]}
    out = run(request(tmp_path, tokenizer_dir, [src], [perplexity(str(root / "prior"), rate=0.5)]))
    rep = by_label(out.report, "filters[0]")
    reached = [t for t in texts if len(t.split()) >= 40]
    assert rep["docs_in"] == len(reached) == rep["scores"]["scored"]
    expected = np.exp(oracle_nll(root / "prior", reached, 64))
    kept = set(np.argsort(expected, kind="stable")[: round(0.5 * len(reached))].tolist())
    table = scores_file(out, rep)
    assert {i for i, r in enumerate(table["reason"]) if r == ""} == kept
    assert rep["reasons"] == {"outside_rate": len(reached) - len(kept)}


def test_color_filter_keeps_the_documents_the_target_model_learned_most_on(tmp_path, models, tokenizer_dir):
    root, _ = models
    texts = [prose(i) for i in range(8)] + [code(i) for i in range(8)]
    order = np.random.default_rng(0).permutation(len(texts))
    texts = [texts[i] for i in order]
    jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    f = color(str(root / "prior"), str(root / "conditional"), 0.5)
    out = run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl"}], [f]))
    rep = by_label(out.report, "filters[0]")
    table = scores_file(out, rep)
    prior = oracle_nll(root / "prior", texts, 64)
    conditional = oracle_nll(root / "conditional", texts, 64)
    np.testing.assert_allclose(table["prior_nll"], prior, rtol=1e-5)
    np.testing.assert_allclose(table["conditional_nll"], conditional, rtol=1e-5)
    np.testing.assert_allclose(table["color_score"], prior - conditional, rtol=1e-5, atol=1e-6)
    kept = [texts[i] for i, r in enumerate(table["reason"]) if r == ""]
    assert sorted(kept) == sorted(code(i) for i in range(8))  # the target domain's documents, none of the prose
    assert set(rep["scores"]["models"]) == {"prior_model", "conditional_model"}


def test_a_new_checkpoint_at_the_same_path_scores_again(tmp_path, models, tokenizer_dir):
    root, tok = models
    scorer = tmp_path / "scorer"
    tiny_llama(tok, 1).save_pretrained(scorer)
    tok.save_pretrained(scorer)
    jsonl(tmp_path / "d.jsonl", [{"text": prose(i)} for i in range(6)])
    req = request(tmp_path, tokenizer_dir, [{"path": "d.jsonl"}], [perplexity("./scorer", rate=0.5)])
    first = run(req)
    assert run(req).dir == first.dir  # nothing changed: reused
    tiny_llama(tok, 2).save_pretrained(scorer)  # other weights, same path
    again = run(req)
    assert again.dir != first.dir
    a, b = (scores_file(o, by_label(o.report, "filters[0]"))["perplexity"] for o in (first, again))
    assert a != b


def test_models_with_other_tokenizers_are_an_error_for_color_filter(tmp_path, models, tokenizer_dir):
    root, _ = models
    other = tmp_path / "other"
    tok2 = train_bpe([prose(i) for i in range(50)], 300)
    tok2.bos_token = tok2.eos_token
    tiny_llama(tok2, 0).save_pretrained(other)
    tok2.save_pretrained(other)
    jsonl(tmp_path / "d.jsonl", [{"text": prose(i)} for i in range(4)])
    f = color(str(root / "prior"), "./other", 0.5)
    with pytest.raises(DataError, match=r"filters\[0\]: the scoring models .*prior and ./other have different tokenizers"):
        run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl"}], [f]))


def test_max_tokens_beyond_the_models_positions_and_a_missing_model_are_errors(tmp_path, models, tokenizer_dir):
    root, tok = models
    short = tmp_path / "short"
    tiny_llama(tok, 0, positions=32).save_pretrained(short)
    tok.save_pretrained(short)
    jsonl(tmp_path / "d.jsonl", [{"text": prose(i)} for i in range(4)])
    with pytest.raises(DataError, match=r"filters\[0\]: max_tokens 64 is more than the 32 positions of the scoring model ./short"):
        run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl"}], [perplexity("./short", max=100.0)]))
    with pytest.raises(DataError, match=r"cannot read the scoring model ./nowhere"):
        run(request(tmp_path, tokenizer_dir, [{"path": "d.jsonl"}], [perplexity("./nowhere", max=100.0)]))


def test_decisions_from_scores():
    f = make_filter(perplexity("m", rate=0.5))
    assert isinstance(f, Perplexity)
    nll = np.log(np.array([5.0, np.nan, 2.0, 9.0, 2.0]))
    codes, values = f.decide({"model": nll})
    assert codes.tolist() == [4, 1, 0, 4, 0]  # 4 scored, 2 kept: the lowest, the earlier of a tie first
    codes, _ = make_filter(perplexity("m", min=3.0, max=6.0)).decide({"model": nll})
    assert codes.tolist() == [0, 1, 2, 3, 2]
    c = make_filter(color("p", "c", 0.25))
    assert isinstance(c, ColorFilter)
    codes, values = c.decide({"prior_model": np.array([3.0, 3.0, 2.0, np.nan]), "conditional_model": np.array([2.5, 1.0, 2.0, 1.0])})
    assert codes.tolist() == [2, 0, 2, 1] and values["color_score"][1] == 2.0
    with pytest.raises(ValueError, match="missing dtype"):
        make_filter({k: v for k, v in perplexity("m", max=3.0).items() if k != "dtype"})


def test_the_cache_key_names_each_scoring_model(tmp_path, models):
    root, _ = models
    from recipec.runtime.stage_cache import scorer_identities
    from recipec.runtime.stage_filter import chains

    spec = {"sources": [{"path": "d.jsonl"}], "filters": [color("./prior", "org/target-lm", 0.5)]}
    (tmp_path / "prior").symlink_to(root / "prior")
    found = scorer_identities(chains(spec), tmp_path)
    (entry,) = found.values()
    assert set(entry["prior_model"]["files"]) >= {"config.json", "model.safetensors"}
    assert entry["conditional_model"] == {"path": "org/target-lm", "revision": "main", "commit": None}
    assert json.dumps(found)  # plain JSON: it goes into the key
