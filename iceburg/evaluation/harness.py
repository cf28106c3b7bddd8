"""`--lm-eval TASK ...`: lm-evaluation-harness tasks on the tuned and the base model (HF backend).

The field's standard runner does the benchmark work (prompting, scoring, task definitions); iceburg
only reads its per-document log (`log_samples=True`) and pairs the two models document by document,
so each harness metric gets the same `{base, tuned, delta, ci95, n}` with a paired bootstrap as
every other metric (`lm_eval.<task>.<metric>`). A task is a harness task name (`hellaswag`,
`arc_easy`, ... when its data is available offline) or the path of a task YAML, e.g. a local
multiple-choice JSONL (`dataset_path: json`, `dataset_kwargs: {data_files: {test: FILE}}`; see
docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import IceburgError, MissingDependencyError
from .bootstrap import ItemValues, paired_bootstrap


def _tasks(specs: list[str]) -> tuple[list[str], list[str]]:
    """(task names, folders to include): a YAML path contributes its `task:` name and its folder."""
    import yaml

    names, include = [], []
    for spec in specs:
        p = Path(spec)
        if p.suffix in (".yaml", ".yml"):
            if not p.is_file():
                raise IceburgError(f"--lm-eval {spec}: no such task file")
            names.append(str((yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("task") or p.stem))
            include.append(str(p.resolve().parent))
        else:
            names.append(spec)
    return names, sorted(set(include))


def per_document(folder: Path, specs: list[str], limit: int | None = None) -> dict[str, dict[int, float]]:
    """`{"lm_eval.<task>.<metric>": {doc_id: value}}` for the model in `folder`."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise MissingDependencyError("lm-evaluation-harness (for --lm-eval)", "pip install 'iceburg[lm-eval]'") from exc
    import torch

    names, include = _tasks(specs)
    manager = TaskManager(include_path=include or None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise IceburgError(f"--lm-eval: unknown task(s) {', '.join(unknown)}; pass a harness task name or a task "
                           "YAML file (docs/evaluation.md)")
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=names,
                                  task_manager=manager, batch_size=1, log_samples=True, limit=limit,
                                  device="cuda" if torch.cuda.is_available() else "cpu")
    out: dict[str, dict[int, float]] = {}
    for task, samples in res["samples"].items():
        for s in samples:
            for m in s["metrics"]:
                if isinstance(s.get(m), (int, float)):
                    out.setdefault(f"lm_eval.{task}.{m}", {})[int(s["doc_id"])] = float(s[m])
    return out


def lm_eval_metrics(specs: list[str], base: Path, tuned: Path, seed: int) -> dict[str, dict]:
    """Each harness metric of base and tuned, paired by document."""
    b, t = per_document(base, specs), per_document(tuned, specs)
    out = {}
    for name in sorted(set(b) & set(t)):
        docs = sorted(set(b[name]) & set(t[name]))
        vb, vt = ItemValues(), ItemValues()
        for d in docs:
            vb.add(b[name][d]), vt.add(t[name][d])
        out[name] = paired_bootstrap(vb, vt, seed=seed)
    return out
