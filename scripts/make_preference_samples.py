"""Write the bundled preference samples' mined half (`iceburg/data/sample/preference/`).

For each model type, `<type>_answers.jsonl` holds worse answers to prompts of the bundled
transcripts `iceburg/data/sample/<type>.jsonl`, in the failure modes research agents show in real
logs: a refusal, a loop, an answer cut off mid-sentence, and a vague one-liner. They are built
from the good answer's own text (so a loop repeats the agent's own sentence, a cut-off answer is
the real answer stopped at ~35%), with a fixed rotation over prompts, so the file is reproducible.
Then `<type>_mined.jsonl` is what `--mine-preferences` makes of the bundled transcripts plus those
answers: the truth filter scores every answer and the miner pairs them (`iceburg/preference/mining.py`).

Run: PYTHONPATH=. python scripts/make_preference_samples.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from iceburg.config import ModelType
from iceburg.data import SAMPLE_DIR, sample_data_path
from iceburg.data.loader import read_records
from iceburg.preference.data import write_jsonl
from iceburg.preference.mining import mine_preferences
from iceburg.truth.filter import TruthFilter

OUT = SAMPLE_DIR / "preference"
PROMPTS_PER_TYPE = 12  # 12 prompts x 5 types = 60 mined pairs: enough to hold out 10-20%
REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "As an AI language model, I cannot provide an answer to this question.",
    "I'm not able to answer questions like this one. Please consult a qualified expert.",
    "Sorry, I can't assist with that.",
]
VAGUE = ["It depends.", "Hard to say, really.", "Probably yes.", "Some say so, some don't."]


def _sentences(text: str) -> list[str]:
    prose = " ".join(l for l in text.splitlines() if l.strip() and not l.lstrip().startswith(("|", "#", "```")))
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", prose) if len(s.split()) >= 6]


def worse_answer(kind: str, good: str, i: int) -> str:
    if kind == "refusal":
        return REFUSALS[i % len(REFUSALS)]
    if kind == "vague":
        return VAGUE[i % len(VAGUE)]
    if kind == "loop":
        s = (_sentences(good) or [good.split("\n")[0]])[0]
        return " ".join([s] * 12)
    # truncated: the real answer stopped mid-sentence at ~35% of its words
    words = good.split()
    cut = words[: max(12, int(len(words) * 0.35))]
    while cut and cut[-1][-1:] in ".!?:;)":
        cut.pop()
    return " ".join(cut)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    truth = TruthFilter()
    kinds = ["refusal", "loop", "truncated", "vague"]
    for mt in ModelType:
        src = sample_data_path(mt)
        records = [r for r in read_records([src]) if sum(m["role"] == "assistant" for m in r.messages) == 1]
        good = [r for r in records if not truth.assess(r, mt.agent).reasons]
        seen, rows = set(), []
        for r in good:
            key = r.user_text().strip().lower()
            if key in seen or len(rows) >= PROMPTS_PER_TYPE:
                continue
            seen.add(key)
            i = len(rows)
            msgs = [m for m in r.messages if m["role"] != "assistant"]
            answer = worse_answer(kinds[i % len(kinds)], r.assistant_text(), i // len(kinds))
            rows.append({"messages": msgs + [{"role": "assistant", "content": answer}], "agent_type": mt.agent,
                         "metadata": {"sample": f"worse answer ({kinds[i % len(kinds)]}) to {src.name}:{r.line}"}})
        answers = OUT / f"{mt.short}_answers.jsonl"
        answers.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
        pairs, stats = mine_preferences(read_records([src, answers]), truth, agent_type=mt.agent)
        for p in pairs:  # paths relative to the package, so the file does not depend on where it was made
            p.source = Path(p.source).name
            p.metadata = {k: (v.split("/")[-1] if isinstance(v, str) else v) for k, v in p.metadata.items()}
        write_jsonl(OUT / f"{mt.short}_mined.jsonl", pairs)
        print(f"{mt.short}: {len(rows)} worse answers -> {stats.pairs} pairs {stats.pairs_by_reason}")


if __name__ == "__main__":
    main()
