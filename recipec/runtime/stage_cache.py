"""The data stage's cache entry: what its key hashes, what it holds, how it is put in place.

An entry lives under ``cache_dir/<key[:32]>/``: ``train-<segment>.arrow``, ``eval.arrow``
(the held-out ``eval_fraction`` documents), ``eval-<name>.arrow`` for each ``split = "eval"``
source (Arrow streams of ``input_ids``, plus ``attention_mask`` without packing),
``data_report.json``, ``manifest.json`` and, for a trained tokenizer, ``tokenizer/``. The
key hashes the spec (every setting that decides the output), the content of every source
and of every file a filter reads, the models a model filter scores with, the tokenizer, and the tokenizers that made the ids of
token sources: change any byte of data or any
setting and a new entry is built; change nothing and the entry is reused. An entry is
written in a scratch directory beside it and renamed into place, so an interrupted or
concurrent stage never leaves a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import readers, token_sources
from .stage_filter import chains, score_fields
from .stage_request import STAGE_VERSION
from .tokenizer import fingerprint as tokenizer_fingerprint

SCRATCH_FILES = ("docs.arrow", "tokens.bin", "masks.bin")
"""What a stage run leaves in its scratch directory besides the entry's files."""

SCRATCH_DIRS = ("shards",)
"""The scratch directory's directories that are not part of the entry (the Ray executor's shard files)."""


def _source_for_key(source: dict) -> dict:
    """What of a source decides the documents and their filtering (not its schedule; not its name, unless
    it is an evaluation source, whose name names its file ``eval-<name>.arrow``)."""
    ignored = ("phases", "weight", "phase_weights", "path") + (("name",) if source.get("split", "train") != "eval" else ())
    return {k: v for k, v in source.items() if k not in ignored}


def tokenizer_id(request: dict, tokenizer: Any) -> str:
    """What the key holds of the tokenizer: the loaded one's fingerprint, or a hash of the settings that train it."""
    chat = {k: request["tokenizer"].get(k) for k in ("chat_template", "special_tokens")}
    if tokenizer is not None:
        found = tokenizer_fingerprint(tokenizer)
        if any(chat.values()):  # the template decides the examples' ids and masks
            template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else json.dumps(tokenizer.chat_template)
            found = hashlib.sha256((found + "\0" + template).encode()).hexdigest()
        return found
    settings = {"train": request["tokenizer"]["train"]}
    if any(chat.values()):
        settings.update(chat)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cache_key(spec: dict, project_dir: str | os.PathLike, tokenizer_id: str) -> tuple[str, dict]:
    """The cache key of a stage run, and the fingerprints it is made of.

    Args:
        spec: from :func:`.stage_request.make_spec`.
        project_dir: the directory relative data paths start from.
        tokenizer_id: from :func:`tokenizer_id`.

    Returns:
        ``(key, fingerprints)``: a sha256 hex digest and the per-source content hashes.

    Raises:
        DataError: a filter's settings are incomplete or unknown.
    """
    by_source = chains(spec)
    sources = [
        readers.fingerprint_source(s, project_dir, index=i, fields=score_fields(by_source[i]))
        for i, s in enumerate(spec["sources"])
    ]
    # the files a filter reads besides the sources (the one such filter decontaminates, hence the name)
    decontam = {}
    for chain in by_source:
        for link in chain:
            src = link.filter.input_source()
            if src is not None:
                decontam[json.dumps(link.settings, sort_keys=True)] = readers.fingerprint_source(src, project_dir)
    material = {
        "spec": {**spec, "sources": [_source_for_key(s) for s in spec["sources"]]},
        "sources": sources,
        "decontaminate": decontam,
        "tokenizer": tokenizer_id,
    }
    fingerprints = {"sources": sources, "decontaminate": decontam, "tokenizer": tokenizer_id}
    scorers = scorer_identities(by_source, project_dir)
    if scorers:  # the models a model filter scores with: another checkpoint scores again
        material["scorers"] = fingerprints["scorers"] = scorers
    named = token_sources.tokenizer_ids(spec, project_dir)  # the tokenizers that made the token sources' ids
    if named:
        material["source_tokenizers"] = fingerprints["source_tokenizers"] = named
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return key, fingerprints


def scorer_identities(by_source: list, project_dir: str | os.PathLike) -> dict[str, dict]:
    """For each model filter of the chains (by its settings), each of its models' identity (:func:`.model_scores.model_identity`)."""
    from .model_scores import model_identity

    found: dict[str, dict] = {}
    for chain in by_source:
        for link in chain:
            models = getattr(link.filter, "models", None)
            key = json.dumps(link.settings, sort_keys=True)
            if models is not None and key not in found:
                found[key] = {k: model_identity(path, rev, str(project_dir)) for k, path, rev in models()}
    return found


def cache_root(request: dict) -> pathlib.Path:
    """``cache_dir``, relative to the project directory unless absolute."""
    root = pathlib.Path(request["cache_dir"]).expanduser()
    if not root.is_absolute():
        root = pathlib.Path(request["project_dir"]) / root
    return root


@dataclass
class StageOutput:
    """A complete cache entry."""

    dir: pathlib.Path
    report: dict = field(repr=False)

    @property
    def train_files(self) -> list[pathlib.Path]:
        return [self.dir / f"train-{i}.arrow" for i in range(len(self.report["segments"]))]

    @property
    def eval_file(self) -> pathlib.Path:
        """The held-out ``eval_fraction`` of the training sources' documents."""
        return self.dir / "eval.arrow"

    @property
    def eval_set_files(self) -> dict[str, pathlib.Path]:
        """Each ``split = "eval"`` source's sequences, by the source's name, in source order."""
        return {name: self.dir / s["file"] for name, s in self.report.get("eval_sets", {}).items()}

    @property
    def tokenizer_dir(self) -> pathlib.Path | None:
        path = self.dir / "tokenizer"
        return path if path.is_dir() else None


def load_entry(entry: pathlib.Path) -> StageOutput | None:
    """The cache entry at ``entry``, or None if it is not a complete one."""
    manifest = entry / "manifest.json"
    report = entry / "data_report.json"
    if not manifest.is_file() or not report.is_file():
        return None
    return StageOutput(entry, json.loads(report.read_text()))


def load_sequences(path: str | os.PathLike) -> Any:
    """A ``train-*.arrow`` or ``eval*.arrow`` file as a memory-mapped ``datasets.Dataset`` (torch format)."""
    import datasets

    return datasets.Dataset.from_file(str(path)).with_format("torch")


def commit(work: pathlib.Path, entry: pathlib.Path, report: dict, manifest: dict, *, replace: bool) -> StageOutput:
    """Finish the entry built in ``work`` (its report and manifest) and rename it to ``entry``.

    Args:
        work: the scratch directory, beside ``entry``, holding the sequences.
        entry: where the entry goes.
        report: ``data_report.json``.
        manifest: ``manifest.json``; its ``stage_version`` is set here.
        replace: move an existing ``entry`` aside first (a forced rebuild); else an
            entry that another stage finished first is kept and ``work`` dropped.
    """
    (work / "data_report.json").write_text(json.dumps(report, indent=2) + "\n")
    manifest = {**manifest, "stage_version": STAGE_VERSION}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for scratch in SCRATCH_FILES:
        (work / scratch).unlink(missing_ok=True)
    for scratch in SCRATCH_DIRS:
        shutil.rmtree(work / scratch, ignore_errors=True)
    if replace and entry.exists():
        trash = entry.parent / f".old-{uuid.uuid4().hex}"
        os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(work, entry)
    except OSError:  # another stage finished the same entry first: use it
        if load_entry(entry) is None:
            raise
        shutil.rmtree(work, ignore_errors=True)
    return StageOutput(entry, json.loads((entry / "data_report.json").read_text()))
