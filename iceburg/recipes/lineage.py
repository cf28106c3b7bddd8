"""Versions of a model type: lineage.json, the adapter a next version starts from, publish, rollback.

A line of versions lives in one folder (`runs/<type>/v1, v2, ...`); `lineage.json` beside them names,
per version, its run folder, parent, the data it added, its metrics, its gate results and whether it
passed and was published, plus which version is `current` (the one `iceburg-<type>:latest` points at).

    write_train_records(run, records)   RUN/train.jsonl: the curated records a run trained on
    start_from_parent(build, parent)    the fresh LoRA model with the parent's adapter weights loaded
    add_version / publish / rollback    lineage.json edits (atomic), Modelfile, `ollama create`/`cp`

docs/loop.md describes the files and commands.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..errors import IceburgError
from ..run_folder import RunFolder

logger = logging.getLogger(__name__)

LINEAGE = "lineage.json"
TRAIN_RECORDS = "train.jsonl"  # beside heldout.jsonl: {"source", "line", "record", "scores"}
PREVIOUS_HELDOUT = "previous_heldout.jsonl"  # the ancestors' held-out sets, re-evaluated each version
VERSION = re.compile(r"^v(\d+)$")


class LineageError(IceburgError):
    """A lineage, version or publish problem (names the file and the fix)."""


# ---------------------------------------------------------------- what a run keeps for its successor
def write_train_records(run: RunFolder, records: list) -> None:
    """RUN/train.jsonl: each curated training record with its scores (replay picks by them)."""
    from ..run_report import heldout_row, score_row

    run.write_jsonl(run.root / TRAIN_RECORDS, (dict(heldout_row(r), scores=score_row(r)) for r in records))


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def start_from_parent(build: Callable[[], Any], parent: str | Path) -> Any:
    """`build()` (base + fresh LoRA), then the parent's adapter weights loaded into it: the next
    version trains on from where the previous one ended. Refuses an adapter of another shape."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(parent) / "adapter" / "adapter_model.safetensors"
    if not path.is_file():
        raise LineageError(f"--continue-from {parent}: {path} is missing; continue from a finished run folder")
    model = build()
    state = load_file(str(path))
    try:
        res = set_peft_model_state_dict(model, state)
    except RuntimeError as e:  # torch's size mismatch: other LoRA rank or target modules
        raise LineageError(f"--continue-from {parent}: its adapter does not fit this run's LoRA ({e}); keep the "
                           "parent's --lora-r, --lora-alpha and --lora-target-modules (config.json)") from None
    missing = [k for k in getattr(res, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise LineageError(f"--continue-from {parent}: {len(missing)} adapter tensors match no module of this "
                           f"run's LoRA (first: {missing[0]}); keep the parent's --lora-target-modules")
    logger.info("started from %s (%d adapter tensors)", path, len(state))
    return model


# ---------------------------------------------------------------- lineage.json
def lineage_file(folder: Path) -> Path:
    return Path(folder) / LINEAGE


def read_lineage(folder: Path) -> dict:
    path = lineage_file(folder)
    if not path.is_file():
        return {"model_type": None, "current": None, "versions": []}
    return json.loads(path.read_text(encoding="utf-8"))


def write_lineage(folder: Path, data: dict) -> None:
    RunFolder(Path(folder)).write_json(lineage_file(folder), data)


def version_of(lineage: dict, run_name: str) -> dict | None:
    return next((v for v in lineage["versions"] if v["run"] == run_name), None)


def next_version(lineage: dict) -> str:
    nums = [int(m.group(1)) for v in lineage["versions"] if (m := VERSION.match(v["version"]))]
    return f"v{max(nums, default=0) + 1}"


def ensure_root(parent: RunFolder, model_type: str) -> dict:
    """The lineage of the folder holding `parent`; a parent run not listed yet (a plain
    `iceburg-train` run) becomes its first version, passed when its run succeeded and its eval.json
    gates (if any) passed."""
    folder = parent.root.parent
    lineage = read_lineage(folder)
    if lineage["model_type"] not in (None, model_type):
        raise LineageError(f"{lineage_file(folder)} is the lineage of {lineage['model_type']}, not {model_type}; "
                           "put each model type's versions in its own folder (runs/<type>/)")
    lineage["model_type"] = model_type
    if version_of(lineage, parent.name) is None:
        result = parent.read_json(parent.result) or {}
        gates = (parent.read_json(parent.eval) or {}).get("gates", [])
        label = parent.name if VERSION.match(parent.name) else next_version(lineage)
        lineage["versions"].append({
            "version": label, "run": parent.name, "parent": None, "data_added": result.get("data_path", []),
            "created": _now(), "metrics": {"heldout_loss": result.get("eval_loss_after")}, "gates": gates,
            "passed": bool(result.get("success")) and all(g["passed"] for g in gates), "published": False})
        write_lineage(folder, lineage)
    return lineage


def add_version(folder: Path, entry: dict) -> dict:
    lineage = read_lineage(folder)
    versions = lineage["versions"]
    at = next((i for i, v in enumerate(versions) if v["version"] == entry["version"]), len(versions))
    lineage["versions"] = versions[:at] + [entry] + versions[at + 1:]  # in place: the order is the history
    write_lineage(folder, lineage)
    return lineage


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- publish, rollback, list
def tag(model_type: str, version: str) -> str:
    return f"iceburg-{model_type}:{version}"


def write_publish_modelfile(run: RunFolder) -> Path:
    """RUN/publish/Modelfile: the run's Ollama Modelfile with FROM made absolute (so `ollama create -f`
    works from anywhere), else `FROM <the run's GGUF>` (Ollama then uses the GGUF's own template)."""
    from ..export.ollama import parse_modelfile, render_modelfile

    ggufs = sorted(run.exports.glob("**/*.gguf"))
    src = next(iter(sorted(run.exports.glob("**/Modelfile"))), None)
    if src is not None:
        cmds = [(k, str((src.parent / v).resolve()) if k == "model" and v.startswith(".") else v)
                for k, v in parse_modelfile(src.read_text(encoding="utf-8"))]
    elif ggufs:
        cmds = [("model", str(ggufs[0].resolve()))]
    else:
        raise LineageError(f"{run.root}: no GGUF export to publish; train with --formats gguf (or ollama), or "
                           f"write it with iceburg-train --export-only {run.root} --formats gguf")
    out = run.root / "publish" / "Modelfile"
    out.parent.mkdir(exist_ok=True)
    text = render_modelfile(cmds, f"published by iceburg from {run.root}")
    tmp = out.with_name(".Modelfile.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


def _ollama(*args: str) -> str:
    """Run `ollama ARGS` when the binary is on PATH; returns what happened, in words."""
    exe = shutil.which("ollama")
    if exe is None:
        return f"skipped `ollama {' '.join(args)}`: no ollama binary on PATH"
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise LineageError(f"`ollama {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return f"ran `ollama {' '.join(args)}`"


def publish(folder: Path, version: str) -> list[str]:
    """Publish a version that passed its gates: Modelfile, `ollama create iceburg-<type>:vN`, the
    `:latest` tag pointed at it, lineage `current`. Returns the notes (what ran, what was skipped)."""
    lineage = read_lineage(folder)
    entry = _entry(lineage, folder, version)
    if not entry["passed"]:
        failed = "; ".join(g["message"] for g in entry.get("gates", []) if not g["passed"]) or "its run failed"
        raise LineageError(f"{version} did not pass its gates, so it is not published: {failed}")
    modelfile = write_publish_modelfile(RunFolder(Path(folder) / entry["run"]))
    name = tag(lineage["model_type"], version)
    notes = [f"Modelfile for {name}: {modelfile}", _ollama("create", name, "-f", str(modelfile))]
    notes += _point_latest(lineage, folder, version)
    entry["published"], entry["modelfile"] = True, str(modelfile)
    add_version(folder, entry)
    return notes


def rollback(folder: Path, version: str) -> list[str]:
    """Point `iceburg-<type>:latest` (and lineage `current`) back at an earlier published version."""
    lineage = read_lineage(folder)
    entry = _entry(lineage, folder, version)
    if not entry.get("published"):
        raise LineageError(f"{version} was never published (passed: {entry['passed']}); roll back to a published "
                           "version (iceburg models lists them)")
    return _point_latest(lineage, folder, version)


def _point_latest(lineage: dict, folder: Path, version: str) -> list[str]:
    note = _ollama("cp", tag(lineage["model_type"], version), tag(lineage["model_type"], "latest"))
    fresh = read_lineage(folder)
    fresh["current"] = version
    write_lineage(folder, fresh)
    return [note, f"current {lineage['model_type']} version: {version}"]


def _entry(lineage: dict, folder: Path, version: str) -> dict:
    entry = next((v for v in lineage["versions"] if v["version"] == version), None)
    if entry is None:
        known = ", ".join(v["version"] for v in lineage["versions"]) or "none"
        raise LineageError(f"{lineage_file(folder)}: no version {version} (versions: {known})")
    return entry


def find_lineages(root: Path, model_type: str | None = None) -> list[Path]:
    """Folders under `root` (itself, or one or two levels down) holding a lineage.json."""
    found = [p.parent for pat in (LINEAGE, f"*/{LINEAGE}", f"*/*/{LINEAGE}") for p in sorted(Path(root).glob(pat))]
    return [f for f in found if model_type is None or read_lineage(f)["model_type"] == model_type]


def format_models(root: Path) -> str:
    """`iceburg models`: one line per version, `*` marking the current one."""
    lines = []
    for folder in find_lineages(root):
        lin = read_lineage(folder)
        lines.append(f"iceburg-{lin['model_type']} ({folder}):")
        for v in lin["versions"]:
            loss = v.get("metrics", {}).get("heldout_loss")
            prev = v.get("metrics", {}).get("previous_heldout_loss", {})
            lines.append(f"  {'*' if lin['current'] == v['version'] else ' '} {v['version']:<4} run {v['run']:<24} "
                         f"parent {v['parent'] or '-':<4} {'passed' if v['passed'] else 'FAILED'} "
                         f"{'published' if v.get('published') else 'not published':<13} "
                         f"held-out loss {_fmt(loss)}"
                         + (f", previous held-out {_fmt(prev.get('base'))} -> {_fmt(prev.get('tuned'))}" if prev else ""))
    return "\n".join(lines) or f"no lineage.json under {root}"


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"


# ---------------------------------------------------------------- what `iceburg serve TYPE` serves
def current_run(folder: Path) -> tuple[Path, str]:
    """The run folder of the lineage's `current` version (the one `iceburg-<type>:latest` points at:
    set by publish and rollback) and its version label."""
    lineage = read_lineage(folder)
    if not lineage["versions"]:
        raise LineageError(f"{lineage_file(folder)}: no such lineage or no versions in it")
    if lineage.get("current") is None:
        last = lineage["versions"][-1]["run"]
        raise LineageError(f"{lineage_file(folder)}: no version is current (none published yet); publish one "
                           f"(iceburg publish {Path(folder) / last}) or serve a version's folder ({Path(folder) / last})")
    entry = _entry(lineage, folder, lineage["current"])
    return Path(folder) / entry["run"], entry["version"]


def lineage_target(spec: str, root: Path) -> Path | None:
    """The lineage folder `spec` names, or None when it names a run folder or file: a folder holding
    lineage.json (`runs/surveyor`), or a model type (`surveyor`, `iceburg-surveyor`) that is not a
    path, looked up under `root` like `iceburg rollback` does (exactly one lineage of that type)."""
    from ..config import ModelType

    path = Path(spec).expanduser()
    if path.is_dir() and lineage_file(path).is_file():
        return path
    if path.exists():
        return None
    try:
        short = ModelType.parse(spec).short
    except ValueError:
        return None
    found = find_lineages(root, short)
    if len(found) != 1:
        raise LineageError(f"serve {spec}: {len(found)} lineages of {short} under {root} "
                           f"({', '.join(map(str, found)) or 'none'}); pass --root the folder of the one to serve, "
                           "or a run folder")
    return found[0]
