"""Truncation rule on HELD-OUT real markdown, with each issue-13 rule switched off in turn.

    python bench/truth_truncation_heldout.py

The README corpus (bench/truth_real_corpus.py) is where the truncation rules were tuned, so it
cannot show whether they generalise. This bench takes markdown no rule was written against: the
`.md` / `.md.gz` files under /usr/share/doc (Debian package docs: nodejs changelogs, systemd and
zstd style guides, ...) and the `.md` files shipped inside the venv's site-packages (pip's docs,
model-card templates, ...), minus any section that is also in the README corpus. Sections are cut
as in the README corpus (40-1,200 words, ending outside a code fence); each is scored clean and
once cut mid-sentence the same way (bench/truth_corpus.py `plant(..., "truncation")`).

It calls `signals.truncation` on the final answer directly (the filter adds nothing to that
decision), so it runs in seconds. "clean flagged" is the share of clean sections the rule calls
cut off; "recall" the share of planted cuts it finds. Results:
bench/results/truth_truncation_heldout.{md,json}.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import sys
import sysconfig
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from truth_corpus import plant  # noqa: E402
from truth_real_corpus import PINNED, readmes, sections  # noqa: E402

from iceburg.truth import signals as S  # noqa: E402
from iceburg.truth.signals import words_of  # noqa: E402


def heldout_sections() -> tuple[list[tuple[str, str]], int]:
    """(source file, section body) of every held-out markdown section, and the number of files."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted([*Path("/usr/share/doc").rglob("*.md"), *Path("/usr/share/doc").rglob("*.md.gz"),
                    *site.rglob("*.md")])
    only = {ln.strip().lower() for ln in PINNED.read_text().split("\n") if ln.strip() and not ln.startswith("#")}
    seen = {" ".join(words_of(b))[:300] for _n, _v, md in readmes(only) for _h, b in sections(md)}
    out = []
    for f in files:
        try:
            text = gzip.open(f, "rt", errors="replace").read() if f.suffix == ".gz" else f.read_text(errors="replace")
        except OSError:
            continue
        for _h, body in sections(text):
            key = " ".join(words_of(body))[:300]
            if key not in seen:
                seen.add(key)
                out.append((str(f), body))
    return out, len(files)


def ablations() -> dict[str, dict]:
    """Each issue-13 truncation rule as a patch that switches it off (module attributes)."""
    never = re.compile(r"(?!x)x")
    return {
        "all rules (default)": {},
        "without trailing ',' / ' -' / ' /'": {"_CUT_PUNCT": never},
        "without the short-last-item rule": {"SHORT_ITEM_WORDS": -1},
        "without closers-stripping (a closing mark counts as an ending)": {
            "_sentence_ended": lambda ln: ln.rstrip()[-1] in S._TERMINAL or not S._WORD.search(ln.rstrip()[-1])},
        "without link/URL item shapes (last character only)": {
            "_end_shape": lambda ln: ln.rstrip()[-1] if ln.rstrip()[-1] in S._ITEM_ENDS else "word"},
    }


def main() -> None:
    from _common import RESULTS, machine_info, md_table

    secs, n_files = heldout_sections()
    rng = random.Random(5)
    clean, cut = [], []
    for _f, body in secs:
        rec = {"messages": [{"role": "user", "content": "Explain this."}, {"role": "assistant", "content": body}]}
        clean.append(body)
        cut.append(plant(rec, "truncation", rng)["messages"][-1]["content"])
    rows = []
    for name, patch in ablations().items():
        saved = {k: getattr(S, k) for k in patch}
        for k, v in patch.items():
            setattr(S, k, v)
        try:
            fp = sum(S.truncation(x) is not None for x in clean)
            tp = sum(S.truncation(x) is not None for x in cut)
        finally:
            for k, v in saved.items():
                setattr(S, k, v)
        rows.append({"rules": name, "clean_sections": len(clean), "clean_flagged": fp,
                     "clean_flagged_rate": round(fp / len(clean), 4), "cut_sections": len(cut),
                     "recall": round(tp / len(cut), 4)})
    meta = machine_info()
    md = ["# truth_truncation_heldout", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
          "Command: `python bench/truth_truncation_heldout.py`", "",
          f"Held-out source: {n_files} markdown files under /usr/share/doc and site-packages; "
          f"{len(secs)} sections not in the README corpus.", ""] + md_table(rows) + [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "truth_truncation_heldout.md").write_text("\n".join(md))
    (RESULTS / "truth_truncation_heldout.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n".join(md))


if __name__ == "__main__":
    main()
