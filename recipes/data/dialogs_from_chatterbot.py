"""Write recipes/data/dialogs.jsonl: the English dialogs of chatterbot-corpus as `messages` records.

    pip install chatterbot-corpus==1.3.3 pyyaml
    python recipes/data/dialogs_from_chatterbot.py

chatterbot-corpus (BSD-3-Clause, https://github.com/gunthercox/chatterbot-corpus) holds short
human-written dialogs as YAML lists of alternating lines. Each dialog becomes one record: the
lines alternate user and assistant, starting with the user; a last line with no answer is
dropped, and so is a dialog with no answer at all. Files and dialogs keep the corpus's order.
"""

from __future__ import annotations

import json
import pathlib

import chatterbot_corpus
import yaml

OUT = pathlib.Path(__file__).with_name("dialogs.jsonl")


def main() -> None:
    root = pathlib.Path(chatterbot_corpus.__file__).parent / "data" / "english"
    records = []
    for path in sorted(root.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for dialog in doc.get("conversations") or []:
            lines = [str(line).strip() for line in dialog if line is not None and str(line).strip()]
            lines = lines[: len(lines) // 2 * 2]
            if not lines:
                continue
            messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": line} for i, line in enumerate(lines)]
            records.append({"topic": path.stem, "messages": messages})
    with OUT.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(records)} dialogs, {sum(len(r['messages']) for r in records)} messages -> {OUT}")


if __name__ == "__main__":
    main()
