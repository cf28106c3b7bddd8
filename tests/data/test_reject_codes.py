"""Reasons as data: every reject carries a stable code from `REJECT_CODES`, the docs list exactly
those codes, and every code the package writes is one of them (read from the source, so a new
drop site with an unlisted code fails here before it fails at run time)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import iceburg
from iceburg.records import REJECT_CODES, Reason, RejectWriter

PACKAGE = Path(iceburg.__file__).parent
DOC = PACKAGE.parent / "docs" / "data.md"
# Calls whose code argument is a reject code: Reason(code, message), InvalidLine(message, code),
# ToolCallError(message, code), ContentError(message, code), and any `code=` keyword.
CODE_ARG = {"Reason": 0, "InvalidLine": 1, "ToolCallError": 1, "ContentError": 1}


def doc_codes() -> dict[str, str]:
    section = DOC.read_text(encoding="utf-8").split("## Reject codes", 1)[1]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([\w, ]+) \|", section, re.M)}


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def codes_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in CODE_ARG and len(node.args) > CODE_ARG[name]:
                found.add(_const(node.args[CODE_ARG[name]]))
            found.update(_const(k.value) for k in node.keywords if k.arg == "code")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):  # `code: str = "invalid_record"`
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
            found.update(_const(d) for a, d in zip(args, defaults) if a.arg == "code" and d is not None)
        elif isinstance(node, ast.Assign):  # the truth signals' defect classes: defects["empty"] = ...
            for t in node.targets:
                if isinstance(t, ast.Subscript) and getattr(t.value, "id", None) == "defects":
                    found.add(_const(t.slice))
    return found - {None}


def package_codes() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for code in codes_in(ast.parse(path.read_text(encoding="utf-8"))):
            where.setdefault(code, []).append(str(path.relative_to(PACKAGE)))
    return where


def test_the_docs_table_lists_exactly_the_codes():
    assert sorted(doc_codes()) == sorted(REJECT_CODES)


def test_every_code_the_package_writes_is_listed_and_every_listed_code_is_written():
    used = package_codes()
    unlisted = {c: f for c, f in used.items() if c not in REJECT_CODES}
    assert not unlisted, f"add these to REJECT_CODES and docs/data.md: {unlisted}"
    assert sorted(set(REJECT_CODES) - set(used)) == []  # no code listed that nothing writes
    # the scan sees the sites it is meant to see (it cannot pass by finding nothing)
    assert {"truth/signals.py"} <= set(used["truncated"]) and "data/loader.py" in used["invalid_json"]
    assert "training/encoding.py" in used["template_refused"]


def test_the_scan_catches_an_unlisted_code():
    src = 'Reason("mystery", "x")\nraise InvalidLine("m", "other")\nf(code="third")\ndefects["fourth"] = 1'
    assert codes_in(ast.parse(src)) == {"mystery", "other", "third", "fourth"}


def test_a_reason_needs_a_listed_code_and_drop_needs_reasons(tmp_path):
    with pytest.raises(ValueError, match="unknown reject code 'nope'.*docs/data.md"):
        Reason("nope", "text")
    with RejectWriter(tmp_path / "r.jsonl") as w:
        with pytest.raises(TypeError, match=r"needs Reason\(code, message\)"):
            w.drop("truth", None, ["refusal: a string is not a reason"])
        w.drop("load", None, [Reason("invalid_json", "malformed JSON"), Reason("truncated", "second")],
               raw="{", source="f.jsonl", line=2)
    (row,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (row["code"], row["codes"], row["reasons"]) == ("invalid_json", ["invalid_json", "truncated"],
                                                          ["malformed JSON", "second"])
    assert w.counts == {"load:invalid_json": 1}  # counted once, under its first reason's code
