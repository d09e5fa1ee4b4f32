"""Make preference_pairs.jsonl from dialogs.jsonl: pairs that can be had offline.

Each dialog's last assistant turn is the chosen answer to the conversation before it; the
rejected answer is the last answer of another dialog, drawn (seeded) from another topic, so
it answers some other question. A model that prefers the chosen side has learned to answer
what was asked, not merely to sound like an answer.

    python recipes/data/preference_from_dialogs.py   # rewrites recipes/data/preference_pairs.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    dialogs = [json.loads(line) for line in (HERE / "dialogs.jsonl").read_text().splitlines()]
    rng = random.Random(20261203)
    by_topic: dict[str, list[int]] = {}
    for i, d in enumerate(dialogs):
        by_topic.setdefault(d["topic"], []).append(i)
    rows = []
    for i, d in enumerate(dialogs):
        messages = d["messages"]
        last = max(j for j, m in enumerate(messages) if m["role"] == "assistant")
        chosen = messages[last]["content"]
        while True:
            other = dialogs[rng.randrange(len(dialogs))]
            answer = [m for m in other["messages"] if m["role"] == "assistant"][-1]["content"]
            if other["topic"] != d["topic"] and answer.strip() != chosen.strip():
                break
        rows.append(
            {
                "topic": d["topic"],
                "prompt": messages[:last],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": answer}],
            }
        )
    with open(HERE / "preference_pairs.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} pairs to {HERE / 'preference_pairs.jsonl'}")


if __name__ == "__main__":
    main()
