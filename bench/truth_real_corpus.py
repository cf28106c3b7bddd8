"""Truth-filter accuracy on REAL technical markdown that no one here wrote (issue 13).

    python bench/truth_real_corpus.py                  # build, evaluate at threshold 0.7, save
    python bench/truth_real_corpus.py --threshold 0.6  # another min_quality_score

Source: the long descriptions (`Description-Content-Type: text/markdown` READMEs: lists, tables,
code blocks, bold labels, badges, diagrams) in the METADATA of every Python package installed in
the running interpreter (`importlib.metadata`), i.e. the project venv. The package list and
versions go into the results, so a run on another venv is comparable only when they match.

Clean transcripts:
1. Each README is cut into sections at its markdown headings (outside code fences). HTML tags and
   comments are removed, and lines that are only badges or images dropped (an agent does not
   emit them).
2. A section is kept when its body has 40-1,200 words and ends outside a code fence. These
   criteria look only at size and fences, never at any rule of the filter.
3. The source's own duplicates are removed first: exact duplicates of the normalised words, then
   near duplicates (the project's MinHash at word 2-gram Jaccard >= 0.3, stricter than the
   filter's 0.5), so that re-published READMEs (one README shared by a family of packages) do not
   count as "clean rejected".
4. Sections of one package become transcripts of 1-3 turns; each transcript is given one of the
   five agent types (surveyor, dissident, synthesist, oracle, base) in turn, a system prompt and a
   user question built from the section heading.

Planted defects, each class on up to 300 clean transcripts and filtered as its own group (so a
planted copy never meets its clean original): exact copies (re-spaced / upper-cased), near copies
with 2/5/10/20% of plain words edited, generation loops, refusals (three phrasing sets, two held
out), empty answers, answers cut mid-sentence, garbage (replacement characters, symbol soup,
latin-1 mojibake), boilerplate-only answers, and lines with no assistant turn (the loader must
reject them). Two controls that must be KEPT: template-sharing pairs (one fixed report skeleton
around different real sections) and calibrated "no evidence" answers.

Scoring: a defect is caught when the record is rejected with that class among its reasons; a
duplicate pair is caught when exactly one member is dropped as a duplicate naming the other (a
pair whose original is rejected for quality counts as a miss). Results:
bench/results/truth_real_corpus.{md,json}.
"""

from __future__ import annotations

import argparse
import importlib.metadata as im
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from truth_corpus import ADJ, OUTCOMES, exact_copy, plant  # noqa: E402

from iceburg.data.loader import read_records  # noqa: E402
from iceburg.records import RejectWriter  # noqa: E402
from iceburg.truth import DedupConfig, TruthFilter  # noqa: E402
from iceburg.truth.dedup import Deduplicator  # noqa: E402
from iceburg.truth.signals import words_of  # noqa: E402

ROLES = ["surveyor", "dissident", "synthesist", "oracle", "base"]
QUESTIONS = {
    "surveyor": ["What does the documentation of {pkg} say about {h}?", "Survey what is known about {h} in {pkg}."],
    "dissident": ["What should I be sceptical about regarding {h} in {pkg}?", "Challenge the claims about {h} in {pkg}."],
    "synthesist": ["How does {h} fit into the rest of {pkg}?", "Connect {h} in {pkg} to the bigger picture."],
    "oracle": ["What is the bottom line on {h} for {pkg}?", "Give me the principle behind {h} in {pkg}."],
    "base": ["Explain {h} in {pkg}.", "Tell me about {h} ({pkg})."],
}
RATES = [0.02, 0.05, 0.10, 0.20]
# The package set the thresholds were measured on (the venv's markdown READMEs on 2026-11-30);
# packages installed later are new, unseen text: run with `--packages all` to include them.
PINNED = ROOT / "bench" / "truth_real_corpus_packages.txt"
# Defect class -> the reason the filter must give (issue 13's targets: exact 1.0, near <= 10% edits
# 0.95, truncation 0.9, loops/refusals/empty 0.95, clean rejected <= 3%).
DEFECTS = {"loop": "repetition", "refusal": "refusal", "refusal_heldout": "refusal",
           "refusal_heldout2": "refusal", "empty": "empty", "truncation": "truncated",
           "garbage": "garbage", "boilerplate": "boilerplate"}
TARGETS = {"exact_dup": 1.0, "near_dup@0.02": 0.95, "near_dup@0.05": 0.95, "near_dup@0.1": 0.95,
           "loop": 0.95, "refusal": 0.95, "refusal_heldout": 0.95, "refusal_heldout2": 0.95,
           "empty": 0.95, "truncation": 0.9, "no_assistant": 1.0}
# Calibrated statements of missing evidence: answers, not refusals (issue 13's example first).
CALIBRATED = [
    "I cannot find any peer-reviewed evidence for that claim; treat it as unsupported.",
    "I could not find any benchmark that measures this, so the claim is unverified for now.",
    "There is no published evidence either way; I would not rely on it.",
    "I can't find a source that confirms this figure, so treat it as an estimate.",
    "No study I found tests this directly; the claim is plausible but unproven.",
    "I cannot confirm this from the documentation: the changelog does not mention it, so assume it is not supported.",
    "I found no evidence that the library does this; the docs describe only the synchronous API.",
    "I'm unable to find a primary source for that number; the closest is a blog post, which is weak evidence.",
]

_HEADING = re.compile(r"^(#{1,4})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HTML_ONLY = re.compile(r"^\s*(?:<[^>]+>\s*)+$")
# a line of badge images only (shields.io, CI status): agents never emit them; other images stay
_BADGE_ONLY = re.compile(r"^\s*(?:\[?!\[[^\]]*\]\([^)]*(?:badge|shields\.io|status)[^)]*\)\]?(?:\([^)]*\))?\s*)+$", re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
# HTML tags, also when one spans several lines (badges: `<a href=...\n  src=...>`): an agent does
# not write them, and left as text their attribute lines read as repeated garbage
# A CommonMark autolink (`<https://...>`, `<user@host>`) is not a tag: removing it left
# sentences with a hole ("See  for further information", "contributed by X in  and") that read
# as cut (issue 31, session 4: 2 of Debian's clean rejections were this builder artefact).
_AUTOLINK = r"(?![A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*>|[^\s<>@]+@[^\s<>]+>)"
_HTML_TAG = re.compile(r"</?" + _AUTOLINK + r"[A-Za-z][^<>]*>", re.S)


def readmes(only: set[str] | None = None) -> list[tuple[str, str, str]]:
    """(name, version, markdown long description) of installed packages, sorted by name; only the
    packages named in `only` when given (the venv is shared and grows, so a pinned list keeps
    the corpus comparable between runs)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for d in im.distributions():
        name = (d.metadata.get("Name") or "").lower()
        if not name or name in seen or (only is not None and name not in only):
            continue
        if "markdown" not in (d.metadata.get("Description-Content-Type") or "").lower():
            continue
        body = d.metadata.get_payload() or d.metadata.get("Description") or ""
        if len(body) > 200:
            seen[name] = (name, d.version, body)
    return [seen[k] for k in sorted(seen)]


def sections(md: str) -> list[tuple[str, str]]:
    """(heading, body) pairs of a markdown document, split at headings outside code fences."""
    out: list[tuple[str, str]] = []
    head, body, fenced = "", [], False
    md = _HTML_TAG.sub("\x00", _COMMENT.sub("", md).replace("\r\n", "\n"))
    for line in md.split("\n"):
        if "\x00" in line:  # a line that held HTML: keep its text only if it is a sentence or more
            line = line.replace("\x00", "")
            if len(line.split()) < 4:
                continue
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            out.append((head, "\n".join(body)))
            head, body = m.group(2).strip("*_` "), []
        elif fenced or not (_HTML_ONLY.match(line) or _BADGE_ONLY.match(line)):
            body.append(line.rstrip())
    out.append((head, "\n".join(body)))
    keep = []
    for h, b in out:
        b = re.sub(r"\n{3,}", "\n\n", b).strip()
        n = len(b.split())
        if 40 <= n <= 1200 and sum(1 for ln in b.split("\n") if _FENCE.match(ln)) % 2 == 0:
            keep.append((h or "the overview", b))
    return keep


def unique_sections(secs: list[tuple[str, str, str]]) -> tuple[list, list, set]:
    """(name, heading, body) sections without the source's own exact copies (same words) and near
    copies (the project's MinHash at a stricter 0.3; the first occurrence is kept): returns the
    exact-unique list, the fully unique list and the indices dropped as near copies."""
    from iceburg.records import Record

    seen, exact_unique = set(), []
    for s in secs:
        key = " ".join(words_of(s[2]))
        if key not in seen:
            seen.add(key)
            exact_unique.append(s)
    dd = Deduplicator(DedupConfig(threshold=0.3))
    store = dd.store()
    for i, (_n, _h, b) in enumerate(exact_unique):
        store.add(i, -i, dd.signature(Record(messages=[{"role": "assistant", "content": b}])))
    dropped = dd.resolve(store)  # score -i: the first occurrence is kept
    return exact_unique, [s for i, s in enumerate(exact_unique) if i not in dropped], dropped


def clean_pool(seed: int, only: set[str] | None = None) -> tuple[list[dict], dict]:
    """Deduplicated sections as (package, heading, body), and source statistics."""
    docs = readmes(only)
    secs = [(name, h, b) for name, _v, md in docs for h, b in sections(md)]
    n_raw = len(secs)
    exact_unique, unique, dropped = unique_sections(secs)
    stats = {"packages_with_markdown_readme": len(docs), "sections_in_size_range": n_raw,
             "exact_source_duplicates_removed": n_raw - len(exact_unique),
             "near_source_duplicates_removed": len(dropped), "unique_sections": len(unique),
             "packages": [f"{n}=={v}" for n, v, _ in docs]}
    return unique, stats


def transcripts(pool: list[tuple[str, str, str]], rng: random.Random) -> list[dict]:
    by_pkg: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, h, b in pool:
        by_pkg[name].append((h, b))
    out, k = [], 0
    for name in sorted(by_pkg):
        secs = by_pkg[name]
        i = 0
        while i < len(secs):
            turns = min(rng.choice([1, 1, 1, 2, 3]), len(secs) - i)
            role = ROLES[k % len(ROLES)]
            k += 1
            msgs = [{"role": "system", "content": f"You are the {role.title()}, an ICEBURG research agent."}]
            for h, b in secs[i:i + turns]:
                msgs.append({"role": "user", "content": rng.choice(QUESTIONS[role]).format(pkg=name, h=h)})
                msgs.append({"role": "assistant", "content": b})
            i += turns
            out.append({"messages": msgs, "agent_type": role, "metadata": {"package": name}})
    return out


def garbage(rec: dict, rng: random.Random) -> dict:
    out = {**rec, "messages": [dict(m) for m in rec["messages"]]}
    last = [m for m in out["messages"] if m["role"] == "assistant"][-1]
    text = last["content"]
    kind = rng.choice(["replacement", "symbols", "mojibake"])
    if kind == "replacement":  # a decoder that gave up: U+FFFD every few characters
        last["content"] = "".join(c if rng.random() > 0.08 else "\ufffd" for c in text)
    elif kind == "symbols":  # token soup from a broken sampler
        last["content"] = " ".join("".join(rng.choice("#@$%^&*~|\\/<>{}[]=+") for _ in range(rng.randint(1, 6)))
                                   for _ in range(rng.randint(60, 200)))
    else:  # UTF-8 read as Latin-1 (twice, as it happens when a pipeline re-encodes)
        t = (text + " \u2014 caf\u00e9 na\u00efve \u201cquoted\u201d \u2019s r\u00e9sum\u00e9 ") * 1
        for _ in range(2):
            t = t.encode("utf-8").decode("latin-1")
        last["content"] = t
    return out


_PLAIN = re.compile(r"^[A-Za-z]+[,.;]?$")
FILLER = ADJ + OUTCOMES + ["notably", "arguably", "indeed", "broadly", "clearly", "often", "mostly"]


def near_copy(rec: dict, rate: float, rng: random.Random) -> dict:
    """Copy with `rate` of the user + assistant words edited (60% substituted, 20% inserted, 20%
    deleted). Only plain words are edited, as a rewording does: markup tokens (fences, table pipes,
    list markers, URLs) keep their place, so the copy is as well-formed as the original."""
    msgs = [dict(m) for m in rec["messages"]]
    for m in msgs:
        if m["role"] == "system":
            continue
        words = m["content"].split(" ")
        plain = [i for i, w in enumerate(words[:-1]) if _PLAIN.match(w)]
        n_words = sum(1 for w in words if w.strip())  # table alignment leaves empty tokens
        k = min(len(plain), max(1, round(rate * n_words)))
        for i in sorted(rng.sample(plain, k), reverse=True):
            op = rng.random()
            tail = words[i][-1] if words[i][-1] in ",.;" else ""
            if op < 0.6:
                words[i] = rng.choice(FILLER) + tail
            elif op < 0.8:
                words.insert(i, rng.choice(FILLER))
            else:
                del words[i]
        m["content"] = " ".join(words)
    return {**rec, "messages": msgs, "quality_score": round(rng.uniform(0.7, 0.99), 2)}


def no_assistant(rec: dict) -> dict:
    return {**rec, "messages": [m for m in rec["messages"] if m["role"] != "assistant"]}


def _prose_paras(rec: dict) -> list[str]:
    body = [m for m in rec["messages"] if m["role"] == "assistant"][0]["content"]
    return [q for q in body.split("\n\n") if "```" not in q and "~~~" not in q]


def template_pair(a: dict, b: dict, rng: random.Random) -> tuple[dict, dict]:
    """Two distinct answers in one fixed report skeleton (about half the words are the skeleton)."""
    def fill(rec: dict) -> dict:
        paras = _prose_paras(rec)
        first, n = [], 0
        for q in paras:  # whole paragraphs (never cut inside a code block), about 120 words
            if n >= 120:
                break
            first.append(q)
            n += len(q.split())
        first = "\n\n".join(first)
        pkg = rec["metadata"]["package"]
        text = (f"## Findings for {pkg}\n\n{first}\n\n## Method\n\nI read the project's published "
                "documentation and release notes, compared the stated behaviour with the examples, and "
                "noted where the text makes a claim without a test or a benchmark behind it.\n\n"
                "## Caveats\n\n- The source is the project's own documentation, not an independent review.\n"
                "- Version differences may change the details described above.\n\n"
                "**Confidence:** moderate, pending an independent check.")
        return {"messages": [{"role": "system", "content": "You are the Surveyor, an ICEBURG research agent."},
                             {"role": "user", "content": f"Report on {pkg}."},
                             {"role": "assistant", "content": text}], "agent_type": "surveyor"}
    return fill(a), fill(b)


def calibrated(rec: dict, rng: random.Random) -> dict:
    out = {**rec, "messages": [dict(m) for m in rec["messages"]]}
    last = [m for m in out["messages"] if m["role"] == "assistant"][-1]
    last["content"] = rng.choice(CALIBRATED)
    return out


def build(seed: int = 13, n_per_class: int = 300, only: set[str] | None = None) -> tuple[dict[str, list[tuple[dict, str, int | None]]], dict]:
    """Labelled groups: "clean" (every transcript), one group per planted defect (on up to
    `n_per_class` clean transcripts each) and the pair groups. Each group is filtered on its own,
    so a planted copy never meets its clean original, and every class can use the whole pool."""
    rng = random.Random(seed)
    pool, source_stats = clean_pool(seed, only)
    clean = transcripts(pool, rng)

    def sample(k: int = n_per_class) -> list[dict]:
        return rng.sample(clean, min(k, len(clean)))

    groups: dict[str, list[tuple[dict, str, int | None]]] = {"clean": [(r, "clean", None) for r in clean]}
    for defect in DEFECTS:
        groups[defect] = [(garbage(r, rng) if defect == "garbage" else plant(r, defect, rng), defect, None)
                          for r in sample()]
    groups["no_assistant"] = [(no_assistant(r), "no_assistant", None) for r in sample()]
    groups["calibrated"] = [(calibrated(r, rng), "calibrated", None) for r in sample()]
    for rate in [None] + RATES:
        lab = "exact_dup" if rate is None else f"near_dup@{rate}"
        g = groups[lab] = []
        for r in sample(n_per_class // 2):
            i = len(g)
            g.append((r, "dup_original", i + 1))
            g.append((exact_copy(r, rng) if rate is None else near_copy(r, rate, rng), lab, i))
    g = groups["template"] = []
    # content of at least 120 words: the skeleton (~60 words) must not be most of the answer
    long = [r for r in clean if sum(len(q.split()) for q in _prose_paras(r)) >= 120]
    bases = rng.sample(long, min(len(long), 2 * (n_per_class // 2)))
    for x, y in zip(bases[::2], bases[1::2]):
        a, b = template_pair(x, y, rng)
        i = len(g)
        g += [(a, "template", i + 1), (b, "template", i)]
    return groups, source_stats


def run_group(items, threshold: float) -> tuple[list[set[str] | None], dict[int, int], dict[int, list[str]], float, int]:
    """Filter one group through the loader and TruthFilter: per item the rejection reasons
    (None = rejected by the loader, empty = kept), duplicate partners, full reasons, seconds."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "real.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for rec, _l, _p in items:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        rw = RejectWriter(None)
        records = list(read_records([path], rw))
        t0 = time.perf_counter()
        kept, _stats = TruthFilter(min_quality_score=threshold).filter(records, rejects=rw)
        secs = time.perf_counter() - t0
    by_line = {r.line: r for r in records}
    kept_lines = {r.line for r in kept}
    preds: list[set[str] | None] = []
    dup_of: dict[int, int] = {}
    full: dict[int, list[str]] = {}
    for i in range(len(items)):
        r = by_line.get(i + 1)
        if r is None:
            preds.append(None)
        elif r.line in kept_lines:
            preds.append(set())
        else:
            full[i] = r.metadata["truth_reasons"]
            preds.append(set(r.metadata["truth_codes"]))  # Reason.code of each reason
            if "duplicate_of" in r.metadata:
                dup_of[i] = int(r.metadata["duplicate_of"].rsplit(":", 1)[1]) - 1
    return preds, dup_of, full, secs, len(records)


def evaluate(groups, threshold: float) -> tuple[list[dict], dict, dict]:
    rows: list[dict] = []
    examples: dict[str, list] = {}
    summary: dict = {"threshold": threshold}

    def row(cls: str, reason: str, items, hits: list[tuple[int, bool]], quality_lost: int | None = None) -> None:
        per_role = defaultdict(list)
        for i, h in hits:
            per_role[items[i][0].get("agent_type", "base")].append(h)
        rows.append({"class": cls, "reason": reason, "n": len(hits),
                     "recall": sum(h for _i, h in hits) / max(len(hits), 1),
                     **{r: (sum(v) / len(v) if (v := per_role.get(r)) else None) for r in ROLES},
                     "target": TARGETS.get(cls), "pairs_lost_to_quality": quality_lost})

    def misses(cls: str, items, idx: list[int], full) -> None:
        examples[cls] = [{"package": items[i][0].get("metadata", {}).get("package"),
                          "reasons": full.get(i, ["kept"]),
                          "end": [m for m in items[i][0]["messages"] if m["role"] == "assistant"][-1]["content"][-160:]}
                         for i in idx[:4]]

    for cls, items in groups.items():
        preds, dup_of, full, secs, n = run_group(items, threshold)
        if cls == "clean":
            roles = [rec.get("agent_type", "base") for rec, _l, _p in items]
            rej = [i for i, p in enumerate(preds) if p]
            summary.update(clean=len(items), clean_rejected=len(rej), clean_rejection_rate=len(rej) / len(items),
                           clean_rejection_by_type={r: sum(1 for i in rej if roles[i] == r)
                                                    / max(1, roles.count(r)) for r in ROLES},
                           clean_rejected_by_reason=dict(Counter(sorted(preds[i])[0] for i in rej)),
                           target_clean_rejection_rate=0.03, records_per_second_1_process=round(n / secs, 1))
            misses("clean", items, rej, full)
        elif cls in DEFECTS:
            reason = DEFECTS[cls]
            hits = [(i, preds[i] is not None and reason in preds[i]) for i in range(len(items))]
            row(cls, reason, items, hits)
            misses(cls, items, [i for i, h in hits if not h], full)
        elif cls == "no_assistant":
            row(cls, "load", items, [(i, preds[i] is None) for i in range(len(items))])
        elif cls == "calibrated":  # the group repeats 8 answers, so only the refusal rule is judged
            hits = [(i, preds[i] is not None and "refusal" not in preds[i]) for i in range(len(items))]
            row("calibrated (not refusal)", "-", items, hits)
            misses(cls, items, [i for i, h in hits if not h], full)
        elif cls == "template":
            hits = [(i, preds[i] == set()) for i in range(len(items))]
            row("template (share kept)", "-", items, hits)
            misses(cls, items, [i for i, h in hits if not h], full)
        else:
            reason = "exact_duplicate" if cls == "exact_dup" else "near_duplicate"
            hits, lost = [], 0
            for i, (_r, lab, j) in enumerate(items):
                if lab == cls:
                    a, b = i in dup_of, j in dup_of
                    hits.append((i, a != b and ((a and dup_of[i] == j and reason in preds[i])
                                                or (b and dup_of[j] == i and reason in preds[j]))))
                    # both members rejected by the quality rules: a miss here, though neither is kept
                    lost += bool(preds[i] and preds[j] and not a and not b)
            row(cls, reason, items, hits, lost)
            misses(cls, items, [i for i, h in hits if not h], full)
    summary["records"] = sum(len(g) for g in groups.values())
    return rows, summary, examples


def signal_distribution(clean: list[dict]) -> list[dict]:
    """What the thresholds are set against: each signal's spread over the clean transcripts."""
    from iceburg.truth import signals as S
    from iceburg.truth.repetition import GOPHER_DUP_NGRAM, GOPHER_TOP_NGRAM

    limits = {"alpha_word_frac": ("<", S.ALPHA_WORD_FRAC), "symbol_ratio": (">", S.SYMBOL_WORD_RATIO),
              "ellipsis_line_frac": (">", S.ELLIPSIS_LINE_FRAC), "garbage_char_frac": (">", S.GARBAGE_CHAR_FRAC),
              "mojibake": (">=", S.MOJIBAKE_MIN), "boilerplate": (">", S.BOILERPLATE_SHARE),
              "dup_line_frac": (">", 0.30), "dup_5gram_frac": (">", GOPHER_DUP_NGRAM[5]),
              "top_2gram_frac": (">", GOPHER_TOP_NGRAM[2]),
              **{k: (">", v) for k, v in S.BLOCK_LIMITS.items()}}
    vals: dict[str, list[float]] = {k: [] for k in limits}
    shortest, refusal_like = [], 0
    for r in clean:
        turns = [m["content"] for m in r["messages"] if m["role"] == "assistant"]
        ts = S.compute(turns)
        for k in limits:
            vals[k].append(ts.values.get(k, 0.0))
        shortest.append(min(len(t.split()) for t in turns))
        refusal_like += any(S.REFUSAL.search(t[:300]) for t in turns)
    rows = []
    for k, (op, lim) in limits.items():
        v = sorted(vals[k])
        n = len(v)
        tripped = sum(1 for x in v if (x < lim if op == "<" else x >= lim if op == ">=" else x > lim))
        rows.append({"signal": k, "rule": f"{op} {lim}", "p50": v[n // 2], "p99": v[int(0.99 * (n - 1))],
                     "max": v[-1], "min": v[0], "clean_tripped": tripped})
    rows.append({"signal": "shortest assistant turn (words)", "rule": f"< {S.EMPTY_WORDS}", "p50": None, "p99": None,
                 "max": None, "min": min(shortest), "clean_tripped": sum(1 for x in shortest if x < S.EMPTY_WORDS)})
    rows.append({"signal": "strict refusal opening", "rule": f"< {S.REFUSAL_MAX_WORDS} words", "p50": None,
                 "p99": None, "clean_tripped": refusal_like})
    return rows


from _common import md_table  # noqa: E402  (bench/ is on sys.path above)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--dump", help="also write the labelled corpus to this JSONL file")
    ap.add_argument("--packages", default=str(PINNED),
                    help="file with one package name a line: only their READMEs (default: the 59 "
                         "packages the thresholds were measured on); 'all' = every installed package")
    ap.add_argument("--tag", default="", help="suffix for the results files")
    args = ap.parse_args()
    from _common import RESULTS, machine_info

    only = None if args.packages == "all" else {
        ln.strip().lower() for ln in Path(args.packages).read_text().split("\n") if ln.strip() and not ln.startswith("#")}
    groups, src = build(args.seed, only=only)
    if only is not None and (missing := sorted(only - {p.split("==")[0] for p in src["packages"]})):
        print(f"note: {len(missing)} pinned packages are not installed here: {missing}")
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as fh:
            for items in groups.values():
                for rec, lab, p in items:
                    fh.write(json.dumps({**rec, "metadata": {**rec.get("metadata", {}), "label": lab, "partner": p}},
                                        ensure_ascii=False) + "\n")
    rows, summary, examples = evaluate(groups, args.threshold)
    dist = signal_distribution([rec for rec, _l, _p in groups["clean"]])
    meta = machine_info()
    md = ["# truth_real_corpus", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
          f"Command: `python bench/truth_real_corpus.py --threshold {args.threshold} --seed {args.seed} "
          f"--packages {args.packages if args.packages == 'all' else Path(args.packages).resolve().relative_to(ROOT)}`", "",
          f"Source: {src['packages_with_markdown_readme']} installed packages with a markdown README; "
          f"{src['sections_in_size_range']} sections of 40-1,200 words; removed as the source's own duplicates: "
          f"{src['exact_source_duplicates_removed']} exact, {src['near_source_duplicates_removed']} near; "
          f"{src['unique_sections']} unique sections.", "",
          f"Labelled set: {summary['records']} records in {len(groups)} groups, each filtered on its own; "
          f"{summary['clean']} clean transcripts. Recall per class (columns: per agent type); the two "
          "controls report the share KEPT; a duplicate pair whose members were both rejected by the quality "
          "rules counts as a miss (`pairs_lost_to_quality`).", ""] + md_table(rows) + [
          "", f"**Clean rejected: {summary['clean_rejected']} of {summary['clean']} "
          f"({summary['clean_rejection_rate']:.1%}, target <= 3%)**; per type: "
          + ", ".join(f"{k} {v:.1%}" for k, v in summary["clean_rejection_by_type"].items())
          + f"; by reason: {summary['clean_rejected_by_reason']}", "",
          f"Scoring speed in this run (one process, clean group): {summary['records_per_second_1_process']} records/s.",
          "", "## Signals on the clean transcripts (what the thresholds are set against)", ""] + md_table(
          [{k: r.get(k) for k in ("signal", "rule", "p50", "p99", "max", "min", "clean_tripped")} for r in dist]) + [""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "truth_real_corpus" + ("" if args.threshold == 0.7 else f"_t{args.threshold}") + args.tag
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"meta": meta, "source": src, "rows": rows, "summary": summary, "signals_on_clean": dist,
         "misses": examples},
        indent=2, default=str))
    print("\n".join(md))
    print(json.dumps(examples, indent=1)[:6000])


if __name__ == "__main__":
    main()
