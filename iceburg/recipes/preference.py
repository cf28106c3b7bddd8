"""The preference recipe, `--objective dpo|orpo|kto` (docs/preference.md), one process:

    open_run -> prepare_pairs (read or mine, split; the SFT encoding; data_stats.json,
    preferences.jsonl) -> plan, LoRA -> `train_preference` (checkpoints in the run folder;
    `--resume` continues them) -> finish_run (the same save, merge, exports and report as SFT)

The data (`iceburg.preference.pipeline`) and the loop, losses and encodings
(`iceburg.training.preference`) are the components; this module only composes them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..config import TrainingConfig
from ..errors import DataError
from ..records import RejectWriter
from ..run_folder import RunFolder
from ..training.result import TrainingResult, as_dict
from ..training.run_parts import plan_run, run_tokenizer, train_args
from .run import Tokens, finish_run, make_result, open_run, run_metrics

logger = logging.getLogger(__name__)


@dataclass
class PairsJob:
    data: Any  # PreparedPreferences
    tokens: Tokens
    train_set: list  # PairExample | KTOItem
    eval_set: list
    stats: dict
    records_rejected: int


def train_preference_run(cfg: TrainingConfig, callbacks: Iterable[Any] = (),
                         started: float | None = None) -> TrainingResult:
    """The whole preference recipe for a validated config; returns the `TrainingResult`."""
    from ..training.model import build_model
    from ..training.preference import PreferenceArgs, train_preference

    started = time.time() if started is None else started
    run, base = open_run(cfg)
    job = prepare_pairs(cfg, run, base)
    plan = plan_run(base.path, cfg, sequences(job, cfg.objective == "kto", planning=True))
    run.write_json(run.plan, as_dict(plan))
    model = build_model(base.path, cfg, plan, job.tokens.tokenizer, job.tokens.added)
    args = pair_args(cfg, plan, job, run)
    with run_metrics(cfg, run) as logs:
        out = train_preference(model, job.train_set, job.eval_set, args,
                               PreferenceArgs(cfg.objective, cfg.preference_beta), callbacks=[*logs, *callbacks])
    logger.info("%s held-out before: %s; after: %s", cfg.objective, out.eval_before, out.eval_after)
    result = make_result(cfg, run, base, plan, **figures(cfg, job, out, args.learning_rate))
    return finish_run(cfg, run, base, model, job.tokens, result, job.stats, started)


def prepare_pairs(cfg: TrainingConfig, run: RunFolder, base) -> PairsJob:
    """Pairs (or KTO examples) read or mined and split, encoded with the SFT encoding; encode drops
    go to rejects.jsonl; writes data_stats.json and preferences.jsonl."""
    from ..preference.data import write_jsonl
    from ..preference.pipeline import prepare_preferences
    from ..records import Reason
    from ..training.preference import encode_kto, encode_pairs

    with RejectWriter(run.rejects) as rejects:
        data = prepare_preferences(cfg, rejects)
        tokens = Tokens(*run_tokenizer(base.path, cfg))
        enc = encode_kto if cfg.objective == "kto" else encode_pairs
        train_set, dropped = enc(tokens.tokenizer, data.train, cfg.max_seq_length, tokens.eos)
        eval_set, dropped_eval = enc(tokens.tokenizer, data.eval, cfg.max_seq_length, tokens.eos)
        for ex_id in dropped + dropped_eval:
            src, _, line = ex_id.rpartition(":")
            rejects.drop("encode", None, [Reason("too_long", f"the prompt fills --max-seq-length {cfg.max_seq_length}: "
                                                 "no answer token left to compare")], source=src, line=int(line or 0))
        stats = dict(data.stats, rejected=dict(rejects.counts), train_examples=len(train_set),
                     eval_examples=len(eval_set))
        records_rejected = rejects.total
    if not train_set:
        raise DataError("no preference examples left after encoding; see rejects.jsonl")
    run.write_json(run.data_stats, stats)
    write_jsonl(run.preferences, data.pairs or data.train + data.eval)
    return PairsJob(data, tokens, train_set, eval_set, stats, records_rejected)


def pair_args(cfg: TrainingConfig, plan, job: PairsJob, run: RunFolder):
    """`TrainArgs` for pairs. One micro-batch of B pairs is 2B unpadded sequences (chosen and
    rejected, or answer and its KL mismatch): half the planner's rows keeps the same memory
    budget. KTO's KL answers come from inside each micro-batch, so its batches are fixed here."""
    from ..training.preference import kl_batches

    args = train_args(cfg, plan, job.tokens.tokenizer, job.tokens.eos, run)
    args.micro_batch_size = max(1, plan.micro_batch_size // 2)
    if cfg.objective == "kto":
        if args.micro_batch_size < 2:  # TRL refuses it too: z0 would be the batch's own reward
            args.micro_batch_size = 2
        tok, eos = job.tokens.tokenizer, job.tokens.eos
        job.train_set = kl_batches(tok, job.train_set, args.micro_batch_size, cfg.max_seq_length, eos, cfg.seed)
        job.eval_set = kl_batches(tok, job.eval_set, args.micro_batch_size, cfg.max_seq_length, eos, cfg.seed)
    return args


def sequences(job: PairsJob, kto: bool, planning: bool = False) -> list:
    """The sequences one pass trains on: chosen and rejected, or a KTO answer and its KL
    mismatch. Before the KL batches exist (`planning`) a KL sequence counts as long as its
    answer, which it is on average."""
    if not kto:
        return [e for d in job.train_set for e in (d.chosen, d.rejected)]
    return [e for d in job.train_set for e in (d.completion, d.completion if planning else d.kl)]


def figures(cfg: TrainingConfig, job: PairsJob, out, learning_rate: float) -> dict[str, Any]:
    """What a preference run measured, in `TrainingResult`'s fields: tokens scale with the pairs
    the plan saw; the held-out preference metrics before/after go under `preference`."""
    seqs, n = sequences(job, cfg.objective == "kto"), len(job.train_set)
    return dict(
        train_loss=out.train_loss, eval_loss_before=out.eval_before.get("loss", math.nan),
        eval_loss_after=out.eval_after.get("loss", math.nan),
        eval_history=[(out.steps, out.eval_after.get("loss", math.nan))], steps=out.steps,
        supervised_tokens=sum(sum(e.mask) for e in seqs) * out.pairs_seen // n,
        total_tokens=sum(len(e.input_ids) for e in seqs) * out.pairs_seen // n,
        records_read=int(job.data.stats.get("load", {}).get("lines", 0)), records_rejected=job.records_rejected,
        train_examples=n, eval_examples=len(job.eval_set), truncated_examples=sum(e.truncated for e in seqs),
        training_seconds=out.wall_seconds, resumed_from_step=out.resumed_from, learning_rate=learning_rate,
        objective=cfg.objective,
        preference={"before": out.eval_before, "after": out.eval_after, "pairs_seen": out.pairs_seen,
                    "data": job.data.stats})
