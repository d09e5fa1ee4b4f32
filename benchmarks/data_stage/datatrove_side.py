"""datatrove's equivalent of recipec's filter stage: Gopher quality filter plus exact dedup.

Run by benchmarks/data_stage.py with the interpreter of the benchmark virtualenv
(.venv-bench), which has datatrove and spaCy; recipec's own environment does not.

Three LocalPipelineExecutor stages, each with TASKS tasks on TASKS workers, the way
datatrove's exact dedup is meant to be run:

  1. JsonlReader -> GopherQualityFilter (defaults) -> JsonlWriter(filtered/)
     -> ExactDedupSignature (xxhash64 of the text)
  2. ExactFindDedups (one task per hash bucket)
  3. JsonlReader(filtered/) -> ExactDedupFilter -> JsonlWriter(output/)

Writers are uncompressed JSONL. The Gopher filter's exclusion writer records the id and
the reason of each dropped document (decisions.jsonl), so the decisions can be compared
with recipec's. Prints one JSON object on the last line of stdout: document counts and
datatrove's own per-step timings.

Usage: .venv-bench/bin/python benchmarks/data_stage/datatrove_side.py CORPUS_DIR WORK_DIR [--tasks 2]
"""

import argparse
import json
import sys
from pathlib import Path

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.filters import GopherQualityFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


# the return annotation matters: datatrove picks its hash function from it
def document_text(doc: Document) -> str:
    return doc.text


def id_and_reason(self, doc: Document) -> dict:
    return {"id": doc.id, "reason": doc.metadata.get("filter_reason")}


def _step_stats(logging_dir: Path) -> list[dict]:
    """The merged stats of one executor: per step, its name, counters and time."""
    stats = json.loads((logging_dir / "stats.json").read_text())
    steps = []
    for step in stats:
        time_stats = step.get("time_stats", {})  # a bare 0 for a step that never ran
        steps.append(
            {
                "name": step["name"],
                "seconds": time_stats.get("total", 0.0) if isinstance(time_stats, dict) else float(time_stats),
                "stats": {k: v.get("total", v) if isinstance(v, dict) else v for k, v in step["stats"].items()},
            }
        )
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--tasks", type=int, default=2)
    args = parser.parse_args()

    work = args.work.resolve()
    config = ExactDedupConfig(content_getter=document_text)
    tasks = args.tasks

    gopher = LocalPipelineExecutor(
        [
            JsonlReader(str(args.corpus.resolve()), glob_pattern="*.jsonl", compression=None),
            GopherQualityFilter(
                exclusion_writer=JsonlWriter(
                    str(work / "dropped"), compression=None, adapter=id_and_reason
                )
            ),
            JsonlWriter(str(work / "filtered"), output_filename="${rank}.jsonl", compression=None),
            ExactDedupSignature(str(work / "sigs"), config=config, finder_workers=tasks),
        ],
        tasks=tasks,
        workers=tasks,
        logging_dir=str(work / "logs" / "1-gopher-signature"),
    )
    find = LocalPipelineExecutor(
        [ExactFindDedups(str(work / "sigs"), str(work / "dups"), config=config)],
        tasks=tasks,
        workers=tasks,
        logging_dir=str(work / "logs" / "2-find-dedups"),
        depends=gopher,
    )
    dedup = LocalPipelineExecutor(
        [
            JsonlReader(str(work / "filtered"), glob_pattern="*.jsonl", compression=None),
            ExactDedupFilter(str(work / "dups"), config=config),
            JsonlWriter(str(work / "output"), compression=None),
        ],
        tasks=tasks,
        workers=tasks,
        logging_dir=str(work / "logs" / "3-dedup-filter"),
        depends=find,
    )
    find.run()  # and, before it, the Gopher stage it depends on
    # stage 3's rank r must read the file of stage 1's rank r, whose document indices the
    # duplicates refer to; the writer makes no file for a rank that kept nothing
    (work / "filtered").mkdir(parents=True, exist_ok=True)
    for rank in range(tasks):
        (work / "filtered" / f"{rank:05d}.jsonl").touch()
    dedup.run()

    steps = {
        stage: _step_stats(work / "logs" / stage)
        for stage in ("1-gopher-signature", "2-find-dedups", "3-dedup-filter")
    }
    dropped = []
    for path in sorted((work / "dropped").glob("*.jsonl")):
        with path.open() as f:
            dropped.extend(json.loads(line) for line in f)
    with (work / "decisions.jsonl").open("w") as f:
        for row in dropped:
            f.write(json.dumps(row) + "\n")

    def count(stage: str, step_index: int, key: str) -> int:
        return int(steps[stage][step_index]["stats"].get(key, 0))

    summary = {
        "documents_read": count("1-gopher-signature", 0, "documents"),
        "gopher_kept": count("1-gopher-signature", 1, "forwarded"),
        "gopher_dropped": count("1-gopher-signature", 1, "dropped"),
        "dedup_dropped": count("3-dedup-filter", 1, "dropped"),
        "documents_kept": count("3-dedup-filter", 1, "forwarded"),
        "decisions": str(work / "decisions.jsonl"),
        "steps": steps,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
