"""The package's layers hold (import-linter, the contract in pyproject.toml) and no module
imports itself through a circle, lazy function-level imports included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_import_circles():
    import grimp

    graph = grimp.build_graph("iceburg")
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    # Tarjan's strongly connected components: any component of 2+ modules is a circle.
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for m in modules:
        if m not in index:
            visit(m)
    circles = comps
    assert not circles, f"import circles: {circles}"


# House rule (docs/ARCHITECTURE.md "Contributing", issue 24): functions of ~10-30 lines; a long
# one is a recipe or a table read top to bottom, and even those stay under 80 lines, with at most
# 3 over 60. Counted from the `def` line to the function's last line (decorators aside).
MAX_LINES, LONG_LINES, MAX_LONG = 80, 60, 3


def function_lengths() -> list[tuple[int, str]]:
    import ast

    found = []
    for path in sorted((ROOT / "iceburg").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                found.append((node.end_lineno - node.lineno + 1, where))
    return sorted(found, reverse=True)


def test_function_lengths_counted_from_def_to_last_line():
    import ast

    src = "def f(x):\n    '''doc'''\n    y = x\n\n    return y\n"
    node = ast.parse(src).body[0]
    assert node.end_lineno - node.lineno + 1 == 5  # docstring and blank line count: what a reader scrolls
    assert function_lengths()  # the walk finds the package's functions (a wrong root would pass vacuously)


def test_no_function_over_80_lines_and_at_most_3_over_60():
    lengths = function_lengths()
    over = [f"{n} lines: {w}" for n, w in lengths if n > MAX_LINES]
    long = [f"{n} lines: {w}" for n, w in lengths if n > LONG_LINES]
    assert not over, f"functions over {MAX_LINES} lines (split them): {over}"
    assert len(long) <= MAX_LONG, f"{len(long)} functions over {LONG_LINES} lines (at most {MAX_LONG}): {long}"
