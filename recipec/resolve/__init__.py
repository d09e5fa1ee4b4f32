"""resolve: `Recipe` -> `Plan`, the checks that span tables and every derived number.

A Plan is what the templates render: an ordered list of settings, each a script
variable with its value and a note naming the recipe key or the derivation, plus the
few values that depend on the data and so are computed by the generated script with a
visible formula, and how the run is launched. resolve is pure: it reads no files and no
machine state; whatever it needs from outside (the pretrained model's config, the parent
run of a continual recipe, the path from the build directory back to the project) is
passed in. The files a recipe names are checked by `recipec.local_files`.

resolve runs `STEPS` in order, one function per concern, each in its module. A step adds
its settings (in script order) to a `PlanBuilder`, reports errors and warnings at the
recipe key, and reads what an earlier step derived by the setting's name. A new setting
is a schema field, a line in one step and its use in one template or runtime module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..chat_templates import ChatTemplates
from ..parent import ParentRun
from ..saved_adapter import SavedAdapter
from ..schema import Recipe
from ..source import SourceMap
from .averaging import averaging_settings
from .builder import PlanBuilder
from .continual import continual_settings
from .data import data_settings
from .launch import launch_settings
from .loss import loss_settings
from .memory import memory_estimate
from .model import ADAMW_IMPLEMENTATION, fast_path_settings, hub_ids, model_settings
from .peft import peft_settings
from .preference import preference_settings
from .plan import Formula, Launch, Plan, Setting
from .run import PLAIN_PATH, default_build_dir, run_settings
from .schedule import schedule_settings
from .segments import segment_settings
from .tokenizer import chat_settings, tokenizer_settings
from .train import optim_settings, sequence_settings, train_settings

STEPS: tuple[Callable[[PlanBuilder], None], ...] = (
    run_settings,  # [recipe], [output]; the build directory
    model_settings,  # [model]: loaded (or the parent's) or built from a config
    fast_path_settings,  # attention kernel, torch.compile, the AdamW implementation
    peft_settings,  # [peft]: the adapter spec, QLoRA's quantization
    tokenizer_settings,  # [tokenizer]: loaded, trained, or the model's own
    chat_settings,  # [tokenizer]: the chat template and added markers; the probe render
    data_settings,  # [data]: sources and filters for the data stage
    preference_settings,  # [preference]: the objective, its options, the reference model
    sequence_settings,  # loading the sequences; seq_len within the model's positions
    optim_settings,  # [optim]: the peak LR, as written or scaled with the batch
    train_settings,  # [train]: the batch, grad_accum_steps, the run's length
    loss_settings,  # [loss]: the chunked cross-entropy, the router's aux-loss coefficient
    schedule_settings,  # [schedule]: phases over the run's steps, the floor, the warmup
    segment_settings,  # the data mixture over the schedule's phases
    continual_settings,  # [continual]: the parent's identity and data
    averaging_settings,  # [ema], [merge]
    launch_settings,  # [launch]: processes, machines, the strategy, accelerate's config
    memory_estimate,  # peak memory per device against launch.device_memory_gib
)
"""The steps of resolve, in the order their settings appear in the generated script."""


def resolve(
    recipe: Recipe,
    source: SourceMap,
    *,
    recipe_file: str,
    build_dir: str | None = None,
    project_dir: str = "../..",
    overrides: tuple[str, ...] = (),
    model_config: dict[str, Any] | None = None,
    model_config_source: str | None = None,
    parent: ParentRun | None = None,
    chat: ChatTemplates | None = None,
    adapter: SavedAdapter | None = None,
) -> Plan:
    """Check the recipe as a whole and derive every number the script needs.

    Args:
        recipe: the validated recipe.
        source: its source map, so errors and origins point at lines.
        recipe_file: the recipe path as the user gave it (recorded in the build).
        build_dir: where the build goes, relative to the project directory.
        project_dir: the project directory seen from the build directory.
        overrides: the `--set` arguments, recorded in the build.
        model_config: the pretrained model's config.json, when it is local (or in the hub cache) and known.
        model_config_source: where model_config was read, for explain (a file, or a hub id at a commit).
        parent: with `[continual]`, the parent run as `recipec.parent.read_parent` found it.
        chat: the chat templates as `recipec.chat_templates.read_chat_templates` read them.
        adapter: with `peft.adapter`, the adapter as `recipec.saved_adapter.read_adapter` read it.

    Raises:
        RecipeError: with every cross-table error found.
    """
    if recipe.continual is not None and parent is None:
        raise ValueError("resolve needs the parent run for a [continual] recipe (see recipec.parent.read_parent)")
    if recipe.peft is not None and recipe.peft.adapter is not None and adapter is None:
        raise ValueError("resolve needs the saved adapter for peft.adapter (see recipec.saved_adapter.read_adapter)")
    b = PlanBuilder(
        recipe,
        source,
        build_dir=build_dir or default_build_dir(recipe),
        model_config=model_config,
        model_config_source=model_config_source,
        parent=parent,
        chat=chat,
        adapter=adapter,
    )
    for step in STEPS:
        step(b)
    return b.plan(recipe_file=recipe_file, project_dir=project_dir, overrides=tuple(overrides))


__all__ = [
    "ADAMW_IMPLEMENTATION",
    "PLAIN_PATH",
    "STEPS",
    "Formula",
    "Launch",
    "Plan",
    "PlanBuilder",
    "Setting",
    "default_build_dir",
    "hub_ids",
    "resolve",
]
