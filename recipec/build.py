"""write: a rendered plan -> the build directory and its lock file.

A build directory holds train.py, accelerate_config.yaml, launch.sh (and slurm.sbatch for
more than one machine), resolved.toml, the runtime package (recipec_runtime/),
requirements.txt (the packages train.py runs on, at the lock's versions) and
recipe.lock.json. The lock records hashes of the recipe, the templates and every generated
file, the recipec version, the seed, the content fingerprint of every data source, the
versions of the installed training packages and the git commit of the recipe; no
timestamps and no absolute paths, so building the same recipe twice on one machine gives
byte-identical directories (package versions and git state are the only machine-specific
entries). The directory is written beside its final place and swapped in, so a failed
build never leaves a half-written one, and a rebuild refuses to overwrite a generated file
that was edited by hand unless forced.

Crash and concurrency safety: builds into one parent directory hold an exclusive lock on
it (flock, released by the kernel when a build dies), so two builds of one recipe run one
after the other and each sees the other's complete result. On Linux the new directory and
the old one are exchanged in one atomic rename (renameat2 RENAME_EXCHANGE), so the build
path names a complete build at every moment, a killed build included; elsewhere two
renames leave a short window without it, which the next build repairs by putting the old
build back. Under the lock, `.NAME.tmp-*` and `.NAME.old-*` directories can only be
leftovers of killed builds, and each build removes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .diagnostics import Diagnostic, RecipeError
from . import render as _render
from .resolve import Plan
from .runtime.file_hashes import directory_sha256
from .schema.model import LOCAL_PREFIXES
from .runtime import trackers
from .source import SourceMap

LOCK_FILE = "recipe.lock.json"
LOCK_VERSION = 1
SCHEMA_VERSION = 1
"""The layout of the lock's entries; bumped when an entry changes meaning."""
TRAINING_PACKAGES = (
    "torch",
    "accelerate",
    "transformers",
    "peft",
    "datasets",
    "tokenizers",
    "safetensors",
    "numpy",
    "pyarrow",
    "zstandard",
    "xxhash",
    "tqdm",
)
"""The packages every build's train.py runs on; their installed versions go into the lock
and requirements.txt (`required_packages` adds those a recipe's options need)."""
REQUIREMENTS = "requirements.txt"
FLASH_ATTENTION = {"flash_attention_2": "flash-attn", "flash_attention_3": "flash-attn-3"}
"""model.attention -> the package transformers runs it with."""
BUILT_AGAINST_TORCH = {
    "deepspeed": "pip install --no-build-isolation deepspeed{pin}",
    "flash-attn": "pip install --no-build-isolation flash-attn{pin}",
    "flash-attn-3": "build hopper/ of https://github.com/Dao-AILab/flash-attention (not on PyPI)",
}
"""Packages compiled against the installed torch, so installed after it: how to get each."""
FORCE_HELP = "rebuild with --force to overwrite them, or move your edits into the recipe"
RUNTIME_PACKAGE = "recipec_runtime"
EXECUTABLES = ("launch.sh", "slurm.sbatch")
"""The generated files that are run as commands."""


@dataclass(frozen=True)
class Build:
    """A written build directory."""

    dir: Path
    files: dict[str, str]
    """{relative path: sha256} of every file except the lock."""
    lock: dict[str, Any]

    @property
    def lock_sha256(self) -> str:
        return sha256_bytes(lock_text(self.lock).encode())

    @property
    def train_py(self) -> Path:
        return self.dir / "train.py"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def runtime_files() -> dict[str, str]:
    """The runtime package's source, keyed by its path inside a build."""
    root = Path(__file__).resolve().parent / "runtime"
    return {
        f"{RUNTIME_PACKAGE}/{p.relative_to(root).as_posix()}": p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*.py"))
    }


def lock_text(lock: dict[str, Any]) -> str:
    """The lock file's exact text (sorted keys, two-space indent, final newline)."""
    return json.dumps(lock, indent=2, sort_keys=True) + "\n"


def _bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def make_lock(
    plan: Plan, source: SourceMap, files: dict[str, str | bytes], project: str | os.PathLike[str] = "."
) -> dict[str, Any]:
    """The lock for a build: what went in, what came out, no time and no absolute path.

    Args:
        plan: the resolved plan.
        source: the recipe's source map (its text is hashed).
        files: every generated file, keyed by its path inside the build.
        project: the project directory that the plan's relative paths start from.

    Returns:
        The lock as a JSON-ready dict; `lock_text` gives its exact text.
    """
    tdir = _render.template_dir()  # looked up at call time: one place decides where templates live
    scaling = plan.recipe.optim.scaling
    extra = {}
    if scaling is not None:  # the reference the peak LR was derived from (batch-size scaling)
        extra["lr_scaling"] = {**scaling.model_dump(), "batch_size": plan["batch_size"], "peak_lr": plan["lr"]}
    if plan.recipe.continual is not None:  # lineage: which run, at which step, this one continues
        extra["parent"] = {
            "dir": plan["parent_dir"],
            "model": plan["model_path"],
            "step": plan["parent_step"],
            "lock_sha256": plan["parent_lock_sha256"],
        }
    project = Path(project)
    if plan.get("peft_adapter") is not None:  # lineage: the saved adapter this run goes on training
        extra["peft_adapter"] = {"path": plan["peft_adapter"], "sha256": plan.get("peft_adapter_sha256")}
        if plan.get("peft_adapter_revision") is not None:  # a hub adapter at a pinned branch, tag or commit
            extra["peft_adapter"]["revision"] = plan["peft_adapter_revision"]
        if not plan["peft_adapter"].startswith(LOCAL_PREFIXES):  # the commit its revision is at in the local cache
            extra["peft_adapter"].update(_hub_commit(plan["peft_adapter"], plan.get("peft_adapter_revision"), "adapter"))
    if plan.get("model_path") is not None and plan.get("model_init") is None:  # the pretrained weights it starts from
        extra["model"] = pretrained_entry(plan["model_path"], plan.get("model_revision"), project)
    tokenizer = plan.get("tokenizer_path")
    if tokenizer is not None and plan.recipe.tokenizer.path is not None and tokenizer != plan.get("model_path"):
        extra["tokenizer"] = pretrained_entry(tokenizer, plan.get("model_revision"), project)
    scorers = scorer_entries(plan, project)
    if scorers:  # the models the data stage's model filters score documents with
        extra["scorers"] = scorers
    return {
        **extra,
        "lock_version": LOCK_VERSION,
        "schema_version": SCHEMA_VERSION,
        "recipec_version": __version__,
        "name": plan.name,
        "seed": plan["seed"],
        "recipe": {"file": plan.recipe_file, "sha256": sha256_bytes(source.text.encode())},
        "overrides": list(plan.overrides),
        "templates": {p.name: sha256_bytes(p.read_bytes()) for p in sorted(tdir.glob("*.j2"))},
        "files": {path: sha256_bytes(_bytes(content)) for path, content in sorted(files.items())},
        "data": data_fingerprints(plan, project),
        "packages": package_versions(required_packages(plan)),
        "git": git_state(project / plan.recipe_file),
    }


OPTIMIZER_PACKAGES = {
    "lion": "lion-pytorch",
    "schedule_free_adamw": "schedulefree",
    "adamw_8bit": "bitsandbytes",
    "paged_adamw_8bit": "bitsandbytes",
}
"""optim.name -> the package outside torch its implementation comes from."""


def required_packages(plan: Plan) -> list[str]:
    """The packages a build's train.py imports: TRAINING_PACKAGES, then what the recipe's
    options add (its trackers, QLoRA's bitsandbytes, DeepSpeed, flash attention, the optimizer's package,
    Ray for the data stage's executor, huggingface_hub for a hub source)."""
    recipe = plan.recipe
    names = list(TRAINING_PACKAGES)
    names += [_requirement_name(trackers.INSTALL[t]) for t in recipe.output.trackers]
    if getattr(recipe.peft, "quantize", None) is not None:  # a LoRA table's key
        names.append("bitsandbytes")
    if recipe.launch.strategy == "deepspeed":
        names.append("deepspeed")
    if recipe.optim.name in OPTIMIZER_PACKAGES and OPTIMIZER_PACKAGES[recipe.optim.name] not in names:
        names.append(OPTIMIZER_PACKAGES[recipe.optim.name])
    if recipe.model.attention in FLASH_ATTENTION:
        names.append(FLASH_ATTENTION[recipe.model.attention])
    if recipe.data.executor == "ray":  # the data stage's tasks
        names.append("ray")
    if any(src.hub is not None for src in recipe.data.sources):  # the hub reader resolves the revision with it
        names.append("huggingface_hub")
    return names


def _requirement_name(requirement: str) -> str:
    """The package a pip requirement names (`aim<4` -> `aim`)."""
    return re.match(r"[A-Za-z0-9._-]+", requirement).group()  # type: ignore[union-attr]


def package_versions(names: list[str] | tuple[str, ...] = TRAINING_PACKAGES) -> dict[str, str | None]:
    """{package: installed version, or None when it is not installed}, read from package
    metadata so that nothing is imported (compiling never imports torch)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def requirements_text(plan: Plan, versions: dict[str, str | None]) -> str:
    """requirements.txt of a build: each package train.py imports, at the version the lock
    records (``versions``: the lock's ``packages``).

    ``==`` pins the public version: a local build label (``2.13.0+cpu``) names a build that
    only PyTorch's own index has, and ``==2.13.0`` matches every build of 2.13.0. A package
    that was not installed where the build was made is listed without a version (a tracker
    with recipec's bound on it). DeepSpeed and flash-attn compile against the installed torch,
    so they are named in comments, to install after the others.
    """
    names = required_packages(plan)
    torch = versions.get("torch")
    torch_pin = f"=={_public(torch)}" if torch else ""
    lines = [
        f"# What the train.py of `{plan.name}` runs on, at the versions recipe.lock.json records (as",
        "# installed where `recipec build` ran). In a fresh virtualenv, from this directory:",
        "#   pip install -r requirements.txt",
        "# torch: pip takes the build of this version that its index offers (on Linux, PyPI's is",
        "# built for CUDA). For another CUDA, or the CPU-only build, install torch first from",
        "# PyTorch's index (cuXYZ: your CUDA version, see https://pytorch.org/get-started/locally/):",
        f"#   pip install torch{torch_pin} --index-url https://download.pytorch.org/whl/cuXYZ   (or .../whl/cpu)",
    ]
    unpinned = {_requirement_name(r): r for r in trackers.INSTALL.values()}
    later = []
    for name in names:
        version = versions.get(name)
        pin = f"=={_public(version)}" if version else ""
        if name in BUILT_AGAINST_TORCH:
            later.append(f"#   {BUILT_AGAINST_TORCH[name].format(pin=pin)}")
        elif version:
            lines.append(f"{name}{pin}")
        else:
            lines.append(f"{unpinned.get(name, name)}  # not installed where this build was made: no version to pin")
    if later:
        lines += ["# compiled against the torch above, so installed after these lines:", *later]
    return "\n".join(lines) + "\n"


def _public(version: str) -> str:
    """A version without its local build label (`2.13.0+cpu` -> `2.13.0`)."""
    return version.split("+", 1)[0]


def build_files(plan: Plan, rendered: dict[str, str | bytes]) -> dict[str, str | bytes]:
    """Every file of a build but the lock: render's output, the runtime package and
    requirements.txt, keyed by path inside the build."""
    files: dict[str, str | bytes] = dict(rendered)
    files.update(runtime_files())
    files[REQUIREMENTS] = requirements_text(plan, package_versions(required_packages(plan)))
    return files


def data_fingerprints(plan: Plan, project: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The content fingerprint of each data source, in recipe order.

    Each entry is ``{"source": label, "sha256": digest}``, or ``{"source": label, "error":
    message}`` when the source cannot be read now: a build does not need its data, so an
    unreadable source is recorded, not fatal (train.py reports it when it runs). A hub
    source's digest is of its settings and the commit its revision is at in the hub cache,
    which the entry names too (``"commit"``).
    """
    from .runtime import hub, readers  # pyarrow and zstandard: only when a lock is made

    entries = []
    for index, src in enumerate(plan["sources"]):
        entry = {"source": readers.source_label(src, index)}
        if src.get("hub") is not None:  # its commit in the hub cache: the build reads no dataset and no network
            entry.update(hub.lock_entry(src))
            entries.append(entry)
            continue
        try:
            entry["sha256"] = readers.fingerprint_source(src, project, index=index)
        except (readers.DataError, OSError, ValueError) as exc:
            entry["error"] = str(exc)
        entries.append(entry)
    return entries


def scorer_entries(plan: Plan, project: Path) -> dict[str, dict[str, Any]]:
    """What the lock records of each model a data filter scores with (`type = "perplexity"`, `"color_filter"`), by
    ``<filter label>.<key>`` (``filters[0].model``, ``web.filters[1].prior_model``): a `pretrained_entry`."""
    from .runtime.readers import source_label
    from .schema.filters import MODEL_FILTERS

    chains = [("filters", plan["filters"])]
    chains += [(f"{source_label(src, i)}.filters", src.get("filters") or []) for i, src in enumerate(plan["sources"])]
    entries = {}
    for prefix, chain in chains:
        for j, f in enumerate(chain):
            for key, revision in MODEL_FILTERS.get(f["type"], ()):
                entries[f"{prefix}[{j}].{key}"] = pretrained_entry(f[key], f[revision], project)
    return entries


def pretrained_entry(path: str, revision: str | None, project: Path) -> dict[str, Any]:
    """What the lock records of a pretrained model or tokenizer the run loads, without loading it.

    Returns:
        A local directory: ``{"path", "files": {name: sha256}}``, each file at its top level
        that ``from_pretrained`` (or a continual run) may read (hidden files aside), hashed
        whole. A hub id: ``{"path", "revision", "commit"}``, the commit its revision (None:
        main) is at in the local Hugging Face cache, which fixes every file; or ``{"path",
        "revision", "error"}`` when the cache does not hold it (the script downloads it, or
        fails offline). Nothing is downloaded: a build needs no network.
    """
    if not path.startswith(LOCAL_PREFIXES):
        return {"path": path, "revision": revision or "main", **_hub_commit(path, revision, "model")}
    try:
        return {"path": path, "files": directory_sha256(project / Path(path).expanduser())}
    except (OSError, RuntimeError) as exc:  # gone since the recipe was read, unreadable: recorded, not fatal
        return {"path": path, "error": f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"}


def _hub_commit(repo: str, revision: str | None, what: str) -> dict[str, str]:
    """``{"commit": sha}`` of a hub repository's revision in the local cache, or ``{"error": message}``."""
    from .runtime.hub import cached_revision, hub_cache_dir

    commit = cached_revision(repo, revision or "main", "models")
    if commit is None:
        return {"error": f"the {what} {repo} (revision {revision or 'main'}) is not in the local hub cache ({hub_cache_dir()})"}
    return {"commit": commit}


def git_state(recipe_path: Path) -> dict[str, Any] | None:
    """The git commit the recipe file is checked out at, and what is uncommitted.

    Returns:
        ``{"commit": HEAD, "recipe_modified": the recipe differs from HEAD or is not
        committed, "dirty": some tracked file differs from HEAD}``; None when the recipe
        is not in a git work tree with a commit, or git cannot be run. Git never fails a
        build.
    """
    where = recipe_path.parent
    head = _git(where, "rev-parse", "HEAD")
    if head is None:
        return None
    recipe_status = _git(where, "status", "--porcelain", "--", recipe_path.name)
    tracked_status = _git(where, "status", "--porcelain", "--untracked-files=no")
    if recipe_status is None or tracked_status is None:
        return None
    return {"commit": head.strip(), "recipe_modified": bool(recipe_status.strip()), "dirty": bool(tracked_status.strip())}


def _git(where: Path, *args: str) -> str | None:
    """stdout of `git -C where ARGS`, or None when git is missing or fails."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # status must not rewrite the index
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, env=env, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def check_output_dir(plan: Plan, source: SourceMap, project: Path) -> None:
    """Refuse an output directory that holds another recipe's run."""
    owner = _owner(project / plan["output_dir"] / "run.json")
    if owner is not None and owner != plan.name:
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"output directory {plan['output_dir']} holds a run of recipe `{owner}`; this would overwrite it",
                    source.locate(("output", "dir")),
                    "set output.dir to a directory of its own",
                )
            ]
        )


def write_build(
    plan: Plan,
    rendered: dict[str, str | bytes],
    source: SourceMap,
    build_dir: Path,
    *,
    project: str | os.PathLike[str] = ".",
    force: bool = False,
) -> Build:
    """Write the build directory, replacing an earlier build of the same recipe.

    Args:
        plan: the resolved plan.
        rendered: render's output.
        source: the recipe's source map (its text is hashed into the lock).
        build_dir: where to write.
        project: the project directory (data sources and the recipe's git state are read from it).
        force: overwrite generated files of the earlier build that were edited by hand.

    Raises:
        RecipeError: when build_dir is not a build of this recipe and not empty, or when
            a generated file of the earlier build was edited or deleted and not `force`.
    """
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(build_dir.parent):
        _clean_leftovers(build_dir)
        _check_build_dir(plan, build_dir)
        if not force:
            check_not_hand_edited(build_dir)
        files = build_files(plan, rendered)
        lock = make_lock(plan, source, files, project)

        tmp = build_dir.parent / f".{build_dir.name}.tmp-{os.getpid()}"
        try:
            for rel, content in files.items():
                path = tmp / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_bytes(content))
            for rel in EXECUTABLES:
                if rel in files:
                    (tmp / rel).chmod(0o755)
            (tmp / LOCK_FILE).write_text(lock_text(lock), encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(tmp, build_dir)
    return Build(build_dir, dict(lock["files"]), lock)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (flock on the directory itself: no lock file
    to leave behind); the kernel releases it when the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): builds are not serialised
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _leftovers(build_dir: Path) -> list[Path]:
    """The temporary and replaced directories of earlier builds of ``build_dir``."""
    prefixes = (f".{build_dir.name}.tmp-", f".{build_dir.name}.old-")
    return sorted(p for p in build_dir.parent.iterdir() if p.name.startswith(prefixes))


def _clean_leftovers(build_dir: Path) -> None:
    """Remove what killed builds left beside ``build_dir`` (call holding the lock).

    A build killed between the two renames of the fallback swap left no ``build_dir``
    but its old contents under ``.NAME.old-PID``: that old build is put back first.
    """
    leftovers = _leftovers(build_dir)
    if not build_dir.exists() and not build_dir.is_symlink():
        olds = [p for p in leftovers if ".old-" in p.name and (p / LOCK_FILE).is_file()]
        if olds:
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            os.replace(newest, build_dir)
            leftovers.remove(newest)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directory entries (Linux renameat2 with RENAME_EXCHANGE).

    Returns:
        True when swapped; False when the platform or the file system cannot, and nothing changed.
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, build_dir: Path) -> None:
    """Put the complete directory ``tmp`` at ``build_dir`` and remove what was there."""
    if not build_dir.exists():
        os.replace(tmp, build_dir)
        return
    if _exchange(tmp, build_dir):
        shutil.rmtree(tmp, ignore_errors=True)  # it holds the old build now
        return
    old = build_dir.parent / f".{build_dir.name}.old-{os.getpid()}"
    os.replace(build_dir, old)  # from here until the next rename there is no build_dir (see _clean_leftovers)
    os.replace(tmp, build_dir)
    shutil.rmtree(old, ignore_errors=True)


def hand_edited(build_dir: Path, lock: dict[str, Any]) -> list[tuple[str, str]]:
    """The generated files of a build that differ from what its lock recorded.

    Returns:
        ``[(relative path, "edited" | "deleted")]``, sorted by path.
    """
    recorded = lock.get("files")
    if not isinstance(recorded, dict):
        return []
    changed = []
    for rel, digest in sorted(recorded.items()):
        path = build_dir / rel
        try:
            actual = sha256_bytes(path.read_bytes())
        except FileNotFoundError:
            changed.append((rel, "deleted"))
            continue
        except IsADirectoryError:
            changed.append((rel, "edited"))
            continue
        if actual != digest:
            changed.append((rel, "edited"))
    return changed


def check_not_hand_edited(build_dir: Path) -> None:
    """Refuse to replace a build whose generated files were changed since it was written.

    Raises:
        RecipeError: one error per edited or deleted file, naming it.
    """
    lock = read_lock(build_dir)
    if lock is None:
        return
    changed = hand_edited(build_dir, lock)
    diagnostics = [
        Diagnostic(
            "error",
            f"generated file {(build_dir / rel).as_posix()} was {how} by hand; a rebuild would "
            + ("overwrite it" if how == "edited" else "restore it"),
            None,
            FORCE_HELP if i == len(changed) - 1 else None,
        )
        for i, (rel, how) in enumerate(changed)
    ]
    if diagnostics:
        raise RecipeError(diagnostics)


def read_lock(build_dir: Path) -> dict[str, Any] | None:
    """The lock of a build directory, or None when there is none or it is not a JSON object."""
    try:
        lock = json.loads((build_dir / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return lock if isinstance(lock, dict) else None


def _check_build_dir(plan: Plan, build_dir: Path) -> None:
    if not build_dir.exists():
        return
    if not build_dir.is_dir():
        raise RecipeError([Diagnostic("error", f"build path {build_dir} exists and is not a directory")])
    lock = build_dir / LOCK_FILE
    if lock.is_file():
        owner = _owner(lock)
        if owner == plan.name:
            return
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"{build_dir} is the build of recipe `{owner}`, not `{plan.name}`",
                    None,
                    "choose another directory with -o",
                )
            ]
        )
    if any(build_dir.iterdir()):
        raise RecipeError(
            [
                Diagnostic(
                    "error",
                    f"{build_dir} exists, is not empty and is not a recipec build; refusing to overwrite it",
                    None,
                    "choose another directory with -o, or remove it",
                )
            ]
        )


def _owner(path: Path) -> str | None:
    """The recipe name recorded in a lock or run.json, or None when there is none to read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = record.get("name") if isinstance(record, dict) else None
    return name if isinstance(name, str) else None
