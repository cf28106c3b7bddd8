"""The truth filter's verdicts on one text set under two source trees (an A/B of a signals change).

Texts: up to five `## ` sections of every markdown file under the venv's site-packages (the first
3,000 files) and the final answers of the bundled samples. Writes `[quality, sorted reject codes]`
per text to OUT; run once per tree and compare the two files:

    PYTHONPATH=/tmp/old_tree python bench/truth_words_ab.py /tmp/old.json
    PYTHONPATH=. python bench/truth_words_ab.py /tmp/new.json
    python -c "import json; a, b = (json.load(open(f)) for f in ('/tmp/old.json', '/tmp/new.json')); \
print(len(a), sum(x != y for x, y in zip(a, b)))"
"""

from __future__ import annotations

import glob
import json
import sys
import sysconfig
from pathlib import Path

from iceburg.data.loader import normalise, read_records
from iceburg.truth.filter import TruthFilter


def texts() -> list[str]:
    out = []
    site = sysconfig.get_paths()["purelib"]
    for f in sorted(glob.glob(f"{site}/**/*.md", recursive=True))[:3000]:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out += [sec for sec in text.split("\n## ")[:5] if 20 < len(sec) < 8000]
    sample = Path(__file__).resolve().parents[1] / "iceburg" / "data" / "sample"
    for f in sorted(sample.glob("*.jsonl")):
        out += [r.messages[-1]["content"] for r in read_records([f])]
    return out


def main() -> None:
    tf, verdicts, all_texts = TruthFilter(min_quality_score=0.7), [], texts()
    for t in all_texts:
        rec = normalise({"messages": [{"role": "user", "content": "Explain."}, {"role": "assistant", "content": t}]})
        a = tf.assess(rec, None)
        verdicts.append([round(a.quality, 4), sorted(r.code for r in a.reasons)])
    Path(sys.argv[1]).write_text(json.dumps(verdicts))
    print(f"{len(all_texts)} texts, {sum(not t.isascii() for t in all_texts)} non-ASCII -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
