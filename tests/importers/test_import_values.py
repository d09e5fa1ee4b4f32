"""Each value of a real config of every tool replaced by one of another type: the import
converts it, or stops at errors located in the config, never at another exception; and where
the importer fails on the value, the error names that key at its line (the trial that finds
it, `recipec.importers.unreadable_value`, blames the one key that is wrong)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from recipec.diagnostics import RecipeError
from recipec.importers import Options, import_config

CONFIGS = Path(__file__).resolve().parent / "configs"

# one config of each tool, with the most keys of its kind
CASES = [
    ("axolotl", "axolotl/fsdp-tp-cp-qwen3.yaml"),
    ("llama-factory", "llama-factory/llama3_lora_sft_trainer_args.yaml"),
    ("torchtune", "torchtune/llama3_1-8B-lora-dpo.yaml"),
    ("litgpt", "litgpt/llama-3-8b-qlora.yaml"),
    ("llm-foundry", "llm-foundry/mpt-7b_dolly_sft.yaml"),
    ("ludwig", "ludwig/config_dpo.yaml"),
    ("transformers", "transformers/smollm-wsd-pretrain.json"),
]
WRONG = ("two", None, [1, 2], True)


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _name(path):
    return "".join(f"[{p}]" if isinstance(p, int) else ("." if i else "") + p for i, p in enumerate(path))


@pytest.mark.parametrize(("tool", "config"), CASES, ids=[t for t, _ in CASES])
def test_each_value_of_the_wrong_type_imports_or_is_an_error_at_its_line(tool, config, tmp_path):
    source = CONFIGS / config
    is_json = source.suffix == ".json"
    data = json.loads(source.read_text(encoding="utf-8")) if is_json else yaml.safe_load(source.read_text(encoding="utf-8"))
    blamed = 0
    for i, path in enumerate(_leaves(data)):
        wrong = WRONG[i % len(WRONG)]
        changed = copy.deepcopy(data)
        node = changed
        for p in path[:-1]:
            node = node[p]
        if node[path[-1]] == wrong:
            continue
        node[path[-1]] = wrong
        file = tmp_path / ("c.json" if is_json else "c.yaml")
        file.write_text(json.dumps(changed, indent=1) if is_json else yaml.safe_dump(changed, sort_keys=False), encoding="utf-8")
        try:
            import_config(file, tool, Options(name="c", model="org/model", data="org/data"))
        except RecipeError as exc:
            for diag in exc.diagnostics:
                where = f"{_name(path)} = {wrong!r}: {diag.message}"
                assert diag.location is not None and diag.location.file == file.as_posix(), where
                assert not diag.message.startswith("recipec cannot import"), where  # a failure no single value causes
                if re.match(r"`[^`]+` (must be a number|cannot be)", diag.message):
                    # the key, or a key whose value refers to it (`${variables.x}`: the error shows the reference)
                    named = re.match(r"`([^`]+)`", diag.message).group(1)
                    assert named == _name(path) or diag.message.endswith(f"`${{{_name(path)}}}` is not one"), where
                    assert diag.location.line > 0, where
                    blamed += 1
    # the wrong values the converter itself fails on are more than a few of each config's
    assert blamed >= 1
