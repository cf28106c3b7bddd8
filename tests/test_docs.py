"""Docs that cannot drift from their results (issue 33): every `bench/results/...` path cited in
README.md and docs/ exists (now, or in the git commit the citation names: "(git abc1234)"), and
where a sentence quotes decimal figures right before its citation, at least one of them appears in
the cited file. Brace lists (`x_{a,b}.md`), `x.md/.json` pairs and `*` globs are expanded."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITE = re.compile(r"bench/results/[A-Za-z0-9_.{},*/-]+")
# a commit named after a citation: "(git abc1234)", "in git history at abc1234, def5678 and ..."
GIT_REF = re.compile(r"^[^\n]{0,40}?\bgit\b(?: history)?(?: at)?\s+((?:[0-9a-f]{7,40}(?:,\s*|\s+and\s+)?)+)")
# figures worth checking: decimals with at least two digits after the point (0.061, 17.85)
FIGURE = re.compile(r"(?<![\w.])\d+\.\d{2,}(?![\d])")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _join_braces(text: str) -> str:
    """A brace list broken over lines (`x_{a,b,\\n c}.md`) as one token."""
    return re.sub(r"\{([^{}]*)\}", lambda m: "{" + re.sub(r"\s+", "", m.group(1)) + "}", text)


def expand(raw: str) -> list[str]:
    raw = raw.rstrip(".,;:")
    m = re.search(r"\{([^{}]*)\}", raw)
    if m:
        return [p for alt in m.group(1).split(",") for p in expand(raw[:m.start()] + alt + raw[m.end():])]
    pair = re.match(r"(.*)\.(\w+)/\.(\w+)$", raw)
    if pair:
        return [f"{pair[1]}.{pair[2]}", f"{pair[1]}.{pair[3]}"]
    return [raw]


def citations() -> list[tuple[str, int, str, list[str], str]]:
    """(doc, line, path, commits named after it, the text of its sentence before it)."""
    out = []
    for doc in doc_files():
        text = _join_braces(doc.read_text(encoding="utf-8"))
        for m in CITE.finditer(text):
            if text[m.end():m.end() + 1] == "<":  # a pattern (`families_matrix_<part>.md`), not a file
                continue
            ref = GIT_REF.match(text[m.end():].lstrip(" `)(.,"))
            commits = re.findall(r"[0-9a-f]{7,40}", ref[1]) if ref else []
            start = max(text.rfind(". ", 0, m.start()), text.rfind("\n\n", 0, m.start()), m.start() - 400)
            line = text.count("\n", 0, m.start()) + 1
            for path in expand(m.group()):
                if not path.endswith("/") and "<" not in path:
                    out.append((doc.name, line, path, commits, text[start:m.start()]))
    return out


def _in_git(commit: str, path: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{commit}:{path}"], cwd=ROOT, capture_output=True).returncode == 0


def test_docs_cite_results():
    assert len(citations()) > 10  # the docs do cite results; the parser found them


def test_every_cited_results_path_exists():
    missing = []
    for doc, line, path, commits, _ in citations():
        if list(ROOT.glob(path)) or any(_in_git(c, path) for c in commits):
            continue
        missing.append(f"{doc}:{line}: {path}" + (f" (not in git {', '.join(commits)} either)" if commits else ""))
    assert not missing, "cited results files that do not exist (cite the current file, or the commit " \
                        "that holds the old one as '(git <sha>)'):\n" + "\n".join(missing)


def test_figures_quoted_before_a_citation_appear_in_the_cited_file():
    wrong = []
    for doc, line, path, _, sentence in citations():
        files = list(ROOT.glob(path))
        figures = FIGURE.findall(sentence)
        if not files or not figures:
            continue
        body = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        if not any(f in body for f in figures):
            wrong.append(f"{doc}:{line}: none of {figures} is in {path}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("raw,paths", [
    ("bench/results/a_{x,y}.md", ["bench/results/a_x.md", "bench/results/a_y.md"]),
    ("bench/results/t.md/.json,", ["bench/results/t.md", "bench/results/t.json"]),
    ("bench/results/t.{md,json}.", ["bench/results/t.md", "bench/results/t.json"]),
])
def test_citation_forms_expand(raw, paths):
    assert expand(raw) == paths
