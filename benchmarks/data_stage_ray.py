"""recipec's data stage on Ray against the local executor: same corpus, same filters, same cores.

The corpus is benchmarks/data_stage.py's (every .py, .md and .txt file of the installed
site-packages, one document per file, as JSONL shards), with the packages that the `ray`
extra adds left out so that it is the corpus of that benchmark's table; it runs at two
sizes, the first half by bytes and the whole. The recipe is that benchmark's "nogopher"
one: exact and MinHash dedup over every document, then tokenize and pack everything, so
every pass runs at full volume. Each size is run, as a separate `recipec data --force
--json` process, with

  local   data.executor = "local", num_proc = 2 (two forked worker processes)
  ray-1   data.executor = "ray", a local Ray of 1 CPU (one worker) started for the stage
  ray-2   data.executor = "ray", a local Ray of 2 CPUs (two workers)

and prints documents/s and MB/s (over the wall time of the whole process: interpreter and
Ray start included), CPU time, the peak memory of the process tree, of the driver (the
`recipec data` process) and of the largest worker (a forked pool process, or a Ray worker
`ray::...`; Ray's own daemons, raylet and GCS, are shown apart), and the ratios, and checks
that every run wrote the same sequences (``sequences_sha256``). Memory sampling is
benchmarks/data_stage.py's (the process tree through /proc every 0.1 s; peaks per process
are the kernel's VmHWM). The 1-minute load average before each run is printed: the
machine is shared, and other work slows whichever run is beside it.

Usage (from the repository root, with recipec's environment and the `ray` extra):

    python benchmarks/data_stage_ray.py [--workdir DIR] [--sizes half,full] [--max-mb MB] [--json OUT]

A full run takes about a quarter of an hour on 2 cores; `--max-mb 20 --sizes full` is a
quick smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data_stage as ds  # noqa: E402

# what `pip install 'recipec[ray]'` adds to site-packages: left out of the corpus, which is
# then the one of benchmarks/data_stage.py's table
RAY_PACKAGES = ("ray", "jsonschema", "jsonschema_specifications", "msgpack", "referencing", "rpds", "attrs", "attr")
RUNS = (("local", "local", 2), ("ray-1", "ray", 1), ("ray-2", "ray", 2))


@dataclass
class Run:
    name: str
    size: str
    documents: int
    mb: float
    wall_s: float
    docs_per_s: float
    mb_per_s: float
    cpu_s: float
    load_before: float
    tree_rss_mib: float
    tree_pss_mib: float
    driver_mib: float
    worker_mib: float
    ray_daemons_mib: float
    sequences_sha256: str
    kept: int
    timings: dict


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def measure(argv: list[str], log: Path) -> tuple[ds.Measured, dict]:
    """benchmarks/data_stage.py's measure, with the peak of each kind of process of the tree beside it."""
    peaks = {"driver": 0, "worker": 0, "daemons": 0}
    done = threading.Event()
    root: list[int] = []

    def kinds() -> None:
        while not done.is_set():
            table = ds._processes()
            if root:
                daemons = 0
                root_line = _cmdline(root[0])
                for pid in ds._tree(root[0], table):
                    rss, _, hwm = ds._memory(pid)
                    line = _cmdline(pid)
                    if pid == root[0]:
                        peaks["driver"] = max(peaks["driver"], hwm)
                    elif line.startswith("ray::") or "default_worker.py" in line or line == root_line:
                        peaks["worker"] = max(peaks["worker"], hwm)  # a Ray worker, or a forked pool process
                    else:
                        daemons += rss  # raylet, GCS, Ray's agents
                peaks["daemons"] = max(peaks["daemons"], daemons)
            done.wait(ds.SAMPLE_S)

    # the tree's root is the command: find it from the sampler once data_stage.measure has started it
    real_popen = ds.subprocess.Popen

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        root.append(proc.pid)
        return proc

    sampler = threading.Thread(target=kinds, daemon=True)
    ds.subprocess.Popen = popen
    try:
        sampler.start()
        measured = ds.measure(argv, log)
    finally:
        ds.subprocess.Popen = real_popen
        done.set()
        sampler.join()
    return measured, {k: v / ds.MIB for k, v in peaks.items()}


def write_recipe(corpus: ds.Corpus, workdir: Path, tokenizer: Path, name: str, executor: str, cpus: int) -> Path:
    path = ds.write_recipe(corpus, "nogopher", workdir, tokenizer)
    text = path.read_text()
    text = text.replace(f"num_proc = {ds.WORKERS}\n", f'num_proc = {cpus}\nexecutor = "{executor}"\n')
    text = text.replace(f"cache-{corpus.size}-nogopher", f"cache-{corpus.size}-{name}")
    out = path.with_name(f"{corpus.size}-{name}.toml")
    out.write_text(text)
    return out


def run_one(corpus: ds.Corpus, workdir: Path, tokenizer: Path, name: str, executor: str, cpus: int) -> Run:
    recipe = write_recipe(corpus, workdir, tokenizer, name, executor, cpus)
    m, peaks = measure([sys.executable, "-m", "recipec", "data", str(recipe), "--force", "--json"], workdir / f"{corpus.size}-{name}.log")
    if m.returncode != 0:
        raise SystemExit(f"{name} on {corpus.size} failed:\n{m.stderr_tail}")
    report = ds._json_from(m.stdout)
    print(f"  {name:<6} {corpus.size:<5} {m.wall_s:7.1f} s  (load before {m.load_before:.2f})", flush=True)
    return Run(
        name=name,
        size=corpus.size,
        documents=corpus.documents,
        mb=corpus.mb,
        wall_s=m.wall_s,
        docs_per_s=corpus.documents / m.wall_s,
        mb_per_s=corpus.mb / m.wall_s,
        cpu_s=m.cpu_s,
        load_before=m.load_before,
        tree_rss_mib=m.peak_rss_mib,
        tree_pss_mib=m.peak_pss_mib,
        driver_mib=peaks["driver"],
        worker_mib=peaks["worker"],
        ray_daemons_mib=peaks["daemons"],
        sequences_sha256=report["segments"][0]["sequences_sha256"],
        kept=report["documents"]["kept"],
        timings=report["timings"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the corpus, recipes and caches go (default: a temp dir)")
    parser.add_argument("--sizes", default="half,full")
    parser.add_argument("--max-mb", type=float, help="cap the corpus at this many MB of text (a quick smoke run)")
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]

    # recipec's environment is this interpreter's (a checkout runs with PYTHONPATH)
    site = next(iter(sorted((Path(sys.prefix) / "lib").glob("python3*/site-packages"))))
    ds.SITE_PACKAGES = site
    ds.RECIPEC_PYTHON = Path(sys.executable)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ds.REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("RAY_ADDRESS", None)
    real_walk = ds.os.walk

    def walk(top, *a, **kw):  # the corpus without the ray extra's packages
        for dirpath, dirnames, filenames in real_walk(top, *a, **kw):
            if Path(dirpath) == site:
                dirnames[:] = [d for d in dirnames if d.split("-")[0].split(".")[0].lower() not in RAY_PACKAGES]
            yield dirpath, dirnames, filenames

    ds.os.walk = walk
    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="recipec-data-stage-ray-")
        workdir = Path(temp.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    corpora = ds.build_corpora(workdir, sizes, args.max_mb)
    for c in corpora.values():
        print(f"  {c.size:<5} {c.documents:>7,} documents  {c.mb:7.1f} MB")
    tokenizer = ds.ensure_tokenizer(corpora[sizes[-1]], workdir)
    print(f"cores: {os.cpu_count()}; recipe: exact + MinHash dedup, tokenize and pack every document")

    runs = [run_one(corpora[size], workdir, tokenizer, *spec) for size in sizes for spec in RUNS]

    print()
    print(
        f"{'run':<7} {'corpus':<6} {'docs/s':>8} {'MB/s':>6} {'wall s':>7} {'CPU s':>7} {'load':>5} "
        f"{'tree PSS':>9} {'driver':>7} {'worker':>7} {'ray daemons':>11}   (MiB)"
    )
    for r in runs:
        print(
            f"{r.name:<7} {r.size:<6} {r.docs_per_s:>8,.0f} {r.mb_per_s:>6.2f} {r.wall_s:>7.1f} {r.cpu_s:>7.1f} "
            f"{r.load_before:>5.2f} {r.tree_pss_mib:>9,.0f} {r.driver_mib:>7,.0f} {r.worker_mib:>7,.0f} {r.ray_daemons_mib:>11,.0f}"
        )
    print()
    for size in sizes:
        by = {r.name: r for r in runs if r.size == size}
        same = len({r.sequences_sha256 for r in by.values()}) == 1
        print(
            f"{size}: ray-2 / local docs/s {by['ray-2'].docs_per_s / by['local'].docs_per_s:.2f}x, "
            f"ray-2 / ray-1 {by['ray-2'].docs_per_s / by['ray-1'].docs_per_s:.2f}x; "
            f"identical sequences: {'yes' if same else 'NO'}"
        )
        for name in ("read_and_analyse_s", "filter_s", "tokenize_s", "pack_s"):
            print(f"  {name:<20} " + "  ".join(f"{r.name} {r.timings.get(name, 0):6.1f}" for r in by.values()))
    if len(sizes) == 2:
        for name in ("local", "ray-1", "ray-2"):
            h, f = (next(r for r in runs if r.name == name and r.size == s) for s in sizes)
            print(f"full / half, {name}: worker peak {f.worker_mib / h.worker_mib:.2f}x, driver peak {f.driver_mib / h.driver_mib:.2f}x")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    if temp is not None:
        temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
