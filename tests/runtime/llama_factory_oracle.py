"""LLaMA-Factory's own data processors, run as a script: the oracle of `overflow = "truncate_turns"`.

    python tests/runtime/llama_factory_oracle.py SITE < request.json > result.json

SITE is a folder holding the unpacked `llamafactory` wheel (the tests fetch 0.9.5 with
`pip download --no-deps`). Its data layer imports without LLaMA-Factory's own dependency
pins, but for torchaudio (for audio data only), which is stubbed. It runs in a process of its
own so that neither the stub nor the tokenizer LLaMA-Factory changes (`fix_special_tokens`)
reaches the tests.

The request: {"tokenizer": dir, "template": name, "cases": [...]}, each case
{"kind": "sft" | "pairwise" | "kto", "messages": [...], "cutoff_len": n,
"mask_history": bool, "rejected": message (pairwise), "desirable": bool (kto)}; `messages`
may start with a system message and ends with the answer. The result: one
{"input_ids": [...], "labels": [...]} per case (pairwise: "chosen_*" and "rejected_*").
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types
from types import SimpleNamespace


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    os.environ["DISABLE_VERSION_CHECK"] = "1"
    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub

    from llamafactory.data.processor import FeedbackDatasetProcessor, PairwiseDatasetProcessor, SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from transformers import AutoTokenizer

    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(request["tokenizer"])
    out = []
    for case in request["cases"]:
        args = SimpleNamespace(
            template=request["template"], tool_format=None, default_system=None, enable_thinking=True,
            preserve_thinking=False, train_on_prompt=False, mask_history=case.get("mask_history", False),
            cutoff_len=case["cutoff_len"], packing=False, neat_packing=False,
        )
        template = get_template_and_fix_tokenizer(tokenizer, args)
        messages = case["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        turns = messages[1:] if system else messages
        prompt, answer = turns[:-1], turns[-1]
        batch = {"_prompt": [prompt], "_system": [system], "_tools": [""], "_images": [None], "_videos": [None], "_audios": [None]}
        kind = case["kind"]
        if kind == "sft":
            processor = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=args)
            batch["_response"] = [[answer]]
        elif kind == "pairwise":
            processor = PairwiseDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=args)
            batch["_response"] = [[answer, case["rejected"]]]
        else:  # kto: [desired, undesired], the other one empty
            processor = FeedbackDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=args)
            empty = {"role": "assistant", "content": ""}
            batch["_response"] = [[answer, empty] if case["desirable"] else [empty, answer]]
        rows = processor.preprocess_dataset(batch)
        out.append({k: v[0] for k, v in rows.items() if k.endswith(("input_ids", "labels"))})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
