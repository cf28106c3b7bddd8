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
# figures worth checking: two or more decimals (0.061, 17.85); with fewer, a figure is too often
# derived (minutes from a file's seconds, a ratio of two of its numbers) to demand it verbatim
FIGURE = re.compile(r"(?<![\w.])\d+\.\d{2,}(?![\d])")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


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
            start = max(text.rfind(". ", 0, m.start()), text.rfind("\n\n", 0, m.start()),
                        text.rfind("\n- ", 0, m.start()), m.start() - 400)  # its sentence or list item
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


def _cited_text(path: str, commits: list[str]) -> str:
    """The cited file's text: at the commit the citation names, else as it is now."""
    for commit in commits:
        shown = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            return shown.stdout
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in ROOT.glob(path))


def _appears(figure: str, body: str) -> bool:
    """`figure` is in `body`, as written or as a number there rounded to its decimals (79.18 -> 79.2;
    thousands separators ignored)."""
    if figure in body:
        return True
    decimals = len(figure.split(".")[1])
    values = {float(n.replace(",", "")) for n in NUMBER.findall(body) if n.replace(",", "").count(".") <= 1}
    return any(abs(v - float(figure)) <= 0.5 * 10 ** -decimals + 1e-9 for v in values)


def test_figures_quoted_before_a_citation_appear_in_the_cited_file():
    """A figure next to its citation must be in that file (at the commit it names): a file whose
    numbers were overwritten by a later run fails here."""
    wrong, checked = [], 0
    for doc, line, path, commits, sentence in citations():
        figures = FIGURE.findall(sentence)
        body = _cited_text(path, commits) if figures else ""
        if not figures or not body:
            continue
        checked += 1
        if not any(_appears(f, body) for f in figures):
            wrong.append(f"{doc}:{line}: none of {figures} is in {path}" + (f" at {commits}" if commits else ""))
    assert checked >= 3 and not wrong, "\n".join(wrong) or f"only {checked} citations had figures to check"


@pytest.mark.parametrize("raw,paths", [
    ("bench/results/a_{x,y}.md", ["bench/results/a_x.md", "bench/results/a_y.md"]),
    ("bench/results/t.md/.json,", ["bench/results/t.md", "bench/results/t.json"]),
    ("bench/results/t.{md,json}.", ["bench/results/t.md", "bench/results/t.json"]),
])
def test_citation_forms_expand(raw, paths):
    assert expand(raw) == paths


def test_a_figure_matches_only_itself_or_its_rounding():
    assert _appears("0.061", "KLD 0.061,") and _appears("79.2", "| 79.18 |") and _appears("9207.5", "9,207.5")
    assert not _appears("0.07", "KLD 0.061") and not _appears("3.4097", "eval loss 3.41")
