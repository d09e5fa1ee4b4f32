"""A transformers `TrainingArguments` saved as JSON (`args.to_json_string()`, or the
`training_args.json` of a run): every training setting of a Trainer run.

The arguments name neither the model nor the data: `recipec import --model ID --data
PATH_OR_HUB_ID` supplies them (a hub dataset `org/name` or a local file of `{"text": ...}`
records).
"""

from __future__ import annotations

from pathlib import Path

from . import hf
from .core import Draft, Legacy, Renamed

VERSION = hf.VERSION
KNOWN = hf.TRAINING_ARGUMENTS
MARKERS = ("per_device_train_batch_size", "lr_scheduler_type", "adam_epsilon", "logging_strategy", "save_strategy")

_WROTE_IT = "the transformers 4.x release that wrote these arguments read it as the new one (5.0 refuses it)"

LEGACY: dict[str, Legacy] = {
    # the arguments are a record of the run, written by the release that ran it: an old name
    # is read as that release read it, and warned about
    "evaluation_strategy": Renamed("eval_strategy", "transformers 4.41", wins="old", reads="transformers 4.41 to 4.50 read it as the new one (4.51 refuses it)"),
    **hf.renamed_4x(_WROTE_IT),
    # transformers 5.25 reads these as the new names, the new name winning when set
    "gradient_checkpointing": Renamed("activation_checkpointing", "transformers 5.23"),
    "gradient_checkpointing_kwargs": Renamed("activation_checkpointing_kwargs", "transformers 5.23"),
}
"""Old names of `TrainingArguments` (transformers/training_args.py of each release) and how they
are read. The arguments' other 4.x fields, which 5.0 removed without a new name, are read as
the release that wrote them read them (see hf.TRAINING_ARGUMENTS)."""


def convert(d: Draft, options) -> None:  # noqa: ANN001 (Options: no import cycle)
    hf.training_args(d, options.num_processes)
    model_and_data(d, options)
    hf.best_model(d)
    hf.mesh(d, options.num_processes)


def model_and_data(d: Draft, options) -> None:  # noqa: ANN001
    """The model and data the command line names (the arguments have neither)."""
    if options.model:
        d.set("model.path", options.model, note="--model")
    else:
        d.note("The config names no model: pass `--model ID` (written as model.path).")
    if not data_option(d, options.data):
        d.note("The config names no data: pass `--data PATH_OR_HUB_ID` (written as a data source).")
    d.set("data.eval_fraction", 0.0, note="the Trainer trains on the whole train dataset; its eval dataset is another")
    every = d.value("train.eval_every")
    if every:
        keys = [k for k in ("eval_strategy", "eval_steps") if d.has(k)]
        d.approx("the eval dataset is not in the arguments: add a source with split = \"eval\" to evaluate", *keys)
        d.warn("evaluation is requested but the arguments name no eval data; the recipe evaluates nothing until a source with split = \"eval\" is added", *keys)


def data_option(d: Draft, data: str | None) -> bool:
    """`--data` as the first source: a local file, or a hub dataset `org/name`; False when it is not given."""
    if not data:
        return False
    if Path(data).exists() or not _hub_id(data):
        d.set("data.sources[0].path", data, note="--data")
    else:
        d.set("data.sources[0].hub.repo", data, note="--data")
    return True


def _hub_id(text: str) -> bool:
    import re

    files = r".*\.(jsonl|json|parquet|txt|arrow|bin|csv|gz|zst)"
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None and re.fullmatch(files, text) is None
