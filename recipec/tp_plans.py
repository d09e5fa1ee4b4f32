"""Which causal-LM model types have a tensor-parallel plan in transformers, as committed data.

`launch.parallelism.tp_size` > 1 loads the model with transformers' `tp_plan="auto"`, which
splits the layers by the plan its config class declares (`base_model_tp_plan`: which
projections are split by columns, which by rows). A model type without one cannot be
split. Compilation never imports transformers, so the model types that have a plan are
written down once, in `tp_plans.json` beside this module, generated from the installed
transformers::

    python -m recipec.tp_plans

A composite config (gemma3: a `text_config` and a `vision_config`) counts when its text
sub-config has a plan. `tests/test_tp_plans.py` regenerates the table and fails when it
differs, printing the command above.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("tp_plans.json")


@cache
def table() -> dict[str, Any]:
    """The committed table: {"transformers": version, "with_plan": [model types]}."""
    return json.loads(TABLE.read_text(encoding="utf-8"))


def has_plan(model_type: str) -> bool:
    """Whether transformers can split a model of this type by tensor parallelism."""
    return model_type in table()["with_plan"]


def generate() -> dict[str, Any]:
    """The table, read from the installed transformers' causal-LM config classes."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    with_plan = []
    for model_type in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        config = CONFIG_MAPPING[model_type]
        text = (getattr(config, "sub_configs", None) or {}).get("text_config")
        if getattr(config, "base_model_tp_plan", None) or getattr(text, "base_model_tp_plan", None):
            with_plan.append(model_type)
    return {"transformers": transformers.__version__, "with_plan": with_plan}


def dumps(data: dict[str, Any]) -> str:
    """The table as committed: one model type per line, so a diff shows what changed."""
    types = ",\n".join(f"  {json.dumps(t)}" for t in data["with_plan"])
    return '{\n"transformers": ' + json.dumps(data["transformers"]) + ',\n"with_plan": [\n' + types + "\n]\n}\n"


if __name__ == "__main__":
    TABLE.write_text(dumps(generate()), encoding="utf-8")
    print(f"wrote {TABLE} ({len(table.__wrapped__()['with_plan'])} model types with a tensor-parallel plan)")
