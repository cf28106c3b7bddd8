"""The recipes wing's structural promises (issue 24), read from the source with `ast`:
one way to open a run folder, one builder of `TrainingResult`, one factory of `TruthFilter` from
settings, `OBJECTIVES` defined once, and `train_prepared` as four named phases of at most ~40
lines each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "iceburg"


def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
            for p in sorted(PKG.rglob("*.py"))}


def calls_to(name: str, methods_only: bool = False) -> list[str]:
    """Where `name(...)` or `x.name(...)` (only the latter with `methods_only`) is called in the
    package (file:line)."""
    found = []
    for path, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else None
                if isinstance(f, ast.Name) and not methods_only:
                    called = f.id
                if called == name:
                    found.append(f"{path}:{node.lineno}")
    return found


def test_every_recipe_opens_its_run_with_open_run():
    # a recipe is a module of the wing with a top-level `train_*` function (helpers such as
    # lineage.py have none); this also proves the scan sees calls (an empty scan would let the
    # "only here" checks below pass)
    recipes = {path for path, tree in modules().items() if path.startswith("iceburg/recipes/")
               and any(isinstance(n, ast.FunctionDef) and n.name.startswith("train_") for n in tree.body)}
    assert {"iceburg/recipes/sft.py", "iceburg/recipes/preference.py", "iceburg/recipes/hpo.py"} <= recipes
    assert {c.split(":")[0] for c in calls_to("open_run")} == recipes


def test_truth_filter_is_built_from_settings_in_one_place():
    assert [c.split(":")[0] for c in calls_to("TruthFilter")] == ["iceburg/truth/from_config.py"]


def test_training_result_is_built_in_one_place():
    assert [c.split(":")[0] for c in calls_to("TrainingResult")] == ["iceburg/recipes/run.py"]


def test_objectives_defined_once():
    where = [f"{path}:{node.lineno}" for path, tree in modules().items() for node in ast.walk(tree)
             if isinstance(node, (ast.Assign, ast.AnnAssign))
             and any(isinstance(t, ast.Name) and t.id == "OBJECTIVES"
                     for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert len(where) == 1 and where[0].startswith("iceburg/config.py"), where


def test_run_folders_open_only_through_open_run():
    # RunFolder.prepare (create, or check --resume) and config.json are open_run's alone; the study
    # folder of a search (hpo/folder.py StudyFolder.prepare) is its own kind of folder
    prepares = [c for c in calls_to("prepare", methods_only=True) if not c.startswith("iceburg/hpo/study.py")]
    assert [c.split(":")[0] for c in prepares] == ["iceburg/recipes/run.py"]
    writes_config = [f"{path}:{node.lineno}" for path, tree in modules().items() for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                     and node.func.attr == "write_json" and node.args
                     and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "config"]
    assert [w.split(":")[0] for w in writes_config] == ["iceburg/recipes/run.py"]


def _function(path: str, name: str) -> ast.FunctionDef:
    tree = modules()[path]
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


PHASES = ("prepare_on_main", "share_job", "train_everywhere", "finish_on_main")


@pytest.mark.parametrize("name", ("train_prepared", *PHASES))
def test_sft_phases_are_short_named_functions(name):
    fn = _function("iceburg/recipes/sft.py", name)
    assert fn.end_lineno - fn.lineno + 1 <= 40  # issue 24: "each a named function of at most ~40 lines"


def test_train_prepared_runs_the_phases_in_order():
    fn = _function("iceburg/recipes/sft.py", "train_prepared")
    called = sorted((n.lineno, n.col_offset, n.func.id) for n in ast.walk(fn)
                    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    order = [c for _, _, c in called if c in PHASES]
    assert order == list(PHASES)


def test_training_package_keeps_only_mechanics():
    # no recipe code left in iceburg/training: nothing there opens a run folder or exports
    training = {p: t for p, t in modules().items() if p.startswith("iceburg/training/")}
    names = {n.name for t in training.values() for n in ast.walk(t) if isinstance(n, ast.FunctionDef)}
    assert not names & {"train_prepared", "export_run", "open_run", "finish_run", "run_preference"}
