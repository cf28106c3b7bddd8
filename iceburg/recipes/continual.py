"""Continual training, `iceburg-train --continue-from RUN --data-path NEW` (docs/loop.md):

    load_parent        RUN's config, base, adapter/, train.jsonl, heldout.jsonl (+ its ancestors')
    open_run           runs/<type>/v(N+1) by default (the parent's folder), same base or refused
    read -> seen_before -> truth -> split -> replay -> emergence
                       new records RUN trained or was held out on: dropped (`seen_before`, the truth
                       filter's exact/near dedup); then `--replay-fraction` of RUN's curated records
    train_prepared     the SFT recipe, the model starting from RUN's adapter (`start_from_parent`);
                       `--gate` rules are checked against RUN's merged model (evaluation/release.py)
    forgetting_check   RUN's and this version's loss on RUN's held-out set (and its ancestors'),
                       paired bootstrap; gate: previous_heldout_loss <= base + --forget-tolerance
    lineage            lineage.json entry (parent, data added, metrics, gates); --publish if passed
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from ..config import TrainingConfig
from ..errors import IceburgError
from ..records import Reason, Record, RejectWriter
from ..run_folder import RunFolder
from ..training.result import TrainingResult
from .lineage import (PREVIOUS_HELDOUT, TRAIN_RECORDS, VERSION, LineageError, add_version, ensure_root,
                      next_version, publish, read_rows)
from .run import open_run

logger = logging.getLogger(__name__)

# Settings that must match the parent's for its adapter to load; taken from its config.json when
# this run leaves them at their defaults.
INHERITED = ("base_model", "model_type", "lora_r", "lora_alpha", "lora_target_modules", "use_dora", "use_rslora",
             "use_qlora", "max_seq_length", "reasoning", "train_on")
FORGET_METRIC = "previous_heldout_loss"


@dataclass
class Parent:
    run: RunFolder
    config: dict
    base: dict
    train_rows: list[dict]  # train.jsonl rows: {"source", "line", "record", "scores"}
    heldout_rows: list[dict]  # its heldout.jsonl plus its previous_heldout.jsonl


def load_parent(path: str) -> Parent:
    run = RunFolder(Path(path))
    if not run.is_run() or not (run.adapter / "adapter_model.safetensors").is_file():
        raise LineageError(f"--continue-from {path}: not a finished run folder with adapter/ and merged/; pass the "
                           "folder iceburg-train printed as 'run folder'")
    rows = read_rows(run.root / TRAIN_RECORDS)
    if not rows:
        raise LineageError(f"--continue-from {path}: {run.root / TRAIN_RECORDS} is missing or empty (written by "
                           "iceburg-train since continual training; a run without it cannot be deduplicated "
                           "against or replayed): retrain that run with this iceburg")
    return Parent(run, run.read_json(run.config) or {}, run.read_json(run.base_model) or {}, rows,
                  read_rows(run.heldout) + read_rows(run.root / PREVIOUS_HELDOUT))


def inherit_settings(cfg: TrainingConfig, parent: Parent) -> None:
    """Keys left at their default take the parent's value. The run goes beside the parent (one
    folder per line of versions), named `--output-name` or the next version (`v2` after `v1`)."""
    defaults = TrainingConfig()
    for key in INHERITED:
        if getattr(cfg, key) == getattr(defaults, key) and key in parent.config:
            setattr(cfg, key, parent.config[key] if key != "model_type" else type(cfg.model_type).parse(
                parent.config[key]))
    lineage = ensure_root(parent.run, cfg.model_type.short)
    cfg.output_dir = str(parent.run.root.parent)  # a line of versions lives in one folder
    cfg.output_name = cfg.output_name or next_version(lineage)


def check_problems(cfg: TrainingConfig) -> None:
    p = []
    if cfg.objective != "sft":
        p.append(f"--objective {cfg.objective}: continual training runs the SFT recipe; drop --objective")
    if cfg.resolved_backend() == "mlx":
        p.append("--backend mlx: continual training loads the parent's adapter into the torch model; use --backend torch")
    if isinstance(cfg.nproc, int) and cfg.nproc > 1:
        p.append("--nproc: continual training runs in one process")
    if not cfg.data_path:
        p.append("--continue-from needs --data-path NEW (the new transcripts, e.g. iceburg collect's DIR/<agent>)")
    if p:
        raise IceburgError("; ".join(p))


def check_same_base(base: Any, parent: Parent) -> None:
    """The adapter only means something on the base it was trained on."""
    mine = base.to_dict()
    same = all(mine.get(k) == parent.base.get(k) for k in ("architecture", "param_count")) and (
        mine.get("path") == parent.base.get("path") or mine.get("spec") == parent.base.get("spec"))
    if not same:
        raise LineageError(
            f"--continue-from {parent.run.root}: trained on base {parent.base.get('spec')} ({parent.base.get('architecture')}, "
            f"{parent.base.get('param_count')} parameters), this run's base is {mine.get('spec')} "
            f"({mine.get('architecture')}, {mine.get('param_count')}); an adapter cannot move to another base: drop "
            f"--base-model (the parent's is used) or train a new line from scratch without --continue-from")


# ---------------------------------------------------------------- data steps
def _records(rows: list[dict]) -> list[Record]:
    from ..data.loader import normalise

    return [normalise(r["record"], r["source"], r["line"]) for r in rows]


def seen_before_step(parent: Parent):
    """Drop new records that are exact or near duplicates (MinHash, the truth filter's settings) of
    anything the parent trained on or held out: the old records are visited first, so a new record
    resolves to an old one when one is similar enough."""
    from ..truth.dedup import Deduplicator

    old = _records(parent.train_rows) + _records(parent.heldout_rows)

    def step(state) -> None:
        dedup = Deduplicator()
        store = dedup.store()
        for i, r in enumerate(old):  # index -1 - i, score +inf: kept first
            store.add(-1 - i, float("inf"), dedup.signature(r))
        for i, r in enumerate(state.records):
            store.add(i, 0.0, dedup.signature(r))
        seen = {i: d for i, d in dedup.resolve(store).items() if i >= 0 and d[1] < 0}
        for i, (kind, j, sim) in sorted(seen.items()):
            why = (f"{kind.replace('_', ' ')} (similarity {sim:.2f}) of {old[-1 - j].source}:{old[-1 - j].line}, "
                   f"which {parent.run.name} already saw")
            state.rejects.drop("continual", state.records[i], [Reason("seen_before", why)],
                               {"parent": parent.run.name, "similarity": sim})
        state.records = [r for i, r in enumerate(state.records) if i not in seen]
        state.stats["continual"] = {"parent": str(parent.run.root), "seen_before": len(seen),
                                    "new_records": len(state.records)}
        if not state.records:
            raise IceburgError(f"--data-path: every new record is one {parent.run.name} already saw (seen_before, "
                               "see rejects.jsonl); collect new conversations first")
    return step


def replay_count(new: int, fraction: float, available: int) -> int:
    """Replay share of the mixed training set: k / (new + k) = fraction."""
    return min(available, round(new * fraction / (1 - fraction))) if fraction > 0 else 0


def replay_step(parent: Parent, fraction: float, by: str, seed: int):
    """Mix the parent's best curated records (by quality or emergence score) into the new training
    records (after the split: replayed records are never held out)."""
    def step(state) -> None:
        rows = list(parent.train_rows)
        if by == "random":
            random.Random(seed).shuffle(rows)
        else:
            key = "quality_score" if by == "quality" else "emergence_score"
            rows.sort(key=lambda r: -(r["scores"].get(key) or 0.0))  # stable: ties keep file order
        k = replay_count(len(state.records), fraction, len(rows))
        replay = _records(rows[:k])
        for r in replay:
            r.metadata["replay_from"] = parent.run.name
        state.records = state.records + replay
        state.stats.setdefault("continual", {}).update(replay=k, replay_fraction=fraction, replay_by=by,
                                                       replay_available=len(rows))
    return step


def prepare_continual(cfg: TrainingConfig, run: RunFolder, rejects: RejectWriter, parent: Parent):
    from ..pipeline import Prepared, emergence_step, read_step, run_steps, split_step, truth_step
    from ..run_report import heldout_row, score_row
    from .lineage import write_train_records

    steps = (read_step, seen_before_step(parent), truth_step, split_step,
             replay_step(parent, cfg.replay_fraction, cfg.replay_by, cfg.seed), emergence_step)
    state = run_steps(cfg, rejects, steps)
    data = Prepared(curriculum=state.curriculum, eval_records=state.eval_records, stats=state.stats)
    run.write_jsonl(run.heldout, map(heldout_row, data.eval_records))
    run.write_jsonl(run.root / PREVIOUS_HELDOUT, parent.heldout_rows)
    run.write_jsonl(run.scores, map(score_row, data.curriculum.records))
    write_train_records(run, data.curriculum.records)
    return data


# ---------------------------------------------------------------- the recipe
def train_continual(cfg: TrainingConfig, callbacks: Iterable[Any] = (), started: float | None = None
                    ) -> TrainingResult:
    from ..evaluation.release import GATED_FORMATS, GateFailed
    from .sft import train_prepared

    started = time.time() if started is None else started
    parent = load_parent(cfg.continue_from)
    inherit_settings(cfg, parent)
    check_problems(cfg)
    run, base = open_run(cfg)
    check_same_base(base, parent)
    shipped = list(cfg.export_formats)  # GGUF/Ollama/ONNX: written only once the forgetting gate passed too
    first = replace(cfg, export_formats=[f for f in shipped if f not in GATED_FORMATS])  # cfg stays as given
    error: IceburgError | None = None
    with RejectWriter(run.rejects) as rejects:
        data = prepare_continual(cfg, run, rejects, parent)
        try:
            result = train_prepared(first, data, run, base, rejects, callbacks, started)
        except GateFailed as e:  # --gate against the parent failed: recorded in the lineage, then raised
            error, result = e, None
    forgetting = forgetting_check(cfg, run, parent)
    if error is None:
        error = ship(cfg, run, base, result, data.stats, started, forgetting["gate"],
                     [f for f in shipped if f in GATED_FORMATS])
    entry = record_version(cfg, run, parent, data.stats, forgetting)
    if cfg.publish:
        if entry["passed"]:
            for note in publish(run.root.parent, entry["version"]):
                logger.warning("publish: %s", note)
        else:
            logger.warning("publish: %s not published: %s", entry["version"], "; ".join(
                g["message"] for g in entry["gates"] if not g["passed"]))
    if error is not None:
        raise error
    return result


def ship(cfg: TrainingConfig, run: RunFolder, base: Any, result: TrainingResult, stats: dict, started: float,
         gate: dict, gated: list[str]) -> IceburgError | None:
    """The gated exports after the forgetting gate: written when it passed (merged into result.json),
    refused like any failed gate (evaluation/release.py) when it did not."""
    from ..evaluation.release import GateFailed
    from ..run_report import build_report
    from .run import export_run

    if not gate["passed"]:
        msg = (f"{gate['message']}. Not written: {', '.join(gated) or 'no gated export was requested'}; the version "
               f"is recorded in lineage.json as not passed; to export anyway: iceburg-train --export-only {run.root} "
               f"--formats {' '.join(gated) or 'gguf'}")
        result.success, result.export_error = False, msg
        run.write_json(run.result, result.to_dict())
        build_report(run.root)
        return GateFailed(msg)
    if not gated:
        return None
    paths, reports = dict(result.export_paths or {}), dict(result.export_reports or {})
    try:  # the --gate rules were checked before the first exports
        export_run(result, replace(cfg, export_formats=gated, gates=[]), run, base, stats, started)
    except IceburgError as e:
        return e
    finally:
        result.export_paths = {**paths, **(result.export_paths or {})}
        result.export_reports = {**reports, **(result.export_reports or {})}
        run.write_json(run.result, result.to_dict())
        build_report(run.root)
    return None


def forgetting_check(cfg: TrainingConfig, run: RunFolder, parent: Parent) -> dict:
    """The parent's and this version's loss on the parent's held-out set (forgetting) and on the new
    held-out set (learning), per record, with paired bootstrap intervals; the forgetting gate."""
    from ..evaluation.bootstrap import ItemValues, paired_bootstrap
    from ..evaluation.gates import check_gates
    from ..evaluation.models import HfModel

    sets = {FORGET_METRIC: _records(parent.heldout_rows), "new_heldout_loss": _records(read_rows(run.heldout))}
    values: dict[str, dict[str, ItemValues]] = {k: {} for k in sets}
    for side, folder in (("base", parent.run.merged), ("tuned", run.merged)):
        model = HfModel(folder, [r for rs in sets.values() for r in rs], threads=cfg.num_threads)
        for name, records in sets.items():
            iv = values[name][side] = ItemValues()
            for loss in model.record_losses(records, cfg.max_seq_length):
                iv.add(None if loss is None else loss[0] / loss[1], 0 if loss is None else loss[1])
        del model
    metrics = {k: paired_bootstrap(v["base"], v["tuned"], seed=cfg.seed) for k, v in values.items()
               if v["base"].num}
    gate = check_gates([f"{FORGET_METRIC}<=base+{cfg.forget_tolerance}"], metrics)[0]
    logger.info("%s", gate["message"])
    return {"metrics": metrics, "gate": gate}


def record_version(cfg: TrainingConfig, run: RunFolder, parent: Parent, stats: dict, forgetting: dict) -> dict:
    from .lineage import read_lineage, version_of

    result = run.read_json(run.result) or {}
    gates = [*(run.read_json(run.eval) or {}).get("gates", []), forgetting["gate"]]
    lineage = read_lineage(run.root.parent)
    parent_entry = version_of(lineage, parent.run.name)
    version = run.name if VERSION.match(run.name) and not version_of(lineage, run.name) else next_version(lineage)
    entry = {"version": version, "run": run.name, "parent": parent_entry["version"] if parent_entry else None,
             "data_added": list(cfg.data_path), "created": result.get("created") or time.strftime(
                 "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "data": stats.get("continual", {}),
             "metrics": {"heldout_loss": result.get("eval_loss_after"),
                         "heldout_loss_parent": result.get("eval_loss_before"), **forgetting["metrics"]},
             "gates": gates, "passed": bool(result.get("success")) and all(g["passed"] for g in gates),
             "published": False}
    add_version(run.root.parent, entry)
    return entry
