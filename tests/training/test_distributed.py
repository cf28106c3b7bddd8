"""Data-parallel training with 2 CPU processes (gloo) on iceburg-tiny.

One 2-process run is killed mid-run (rank 1, SIGKILL), then resumed through the CLI's --nproc;
its loss trajectory must equal a 1-process run with the same global batch, each rank must have
received its share of the micro-batches in the curriculum's order, and rank 0 alone wrote the
run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iceburg.config import TrainingConfig
from iceburg.training.distributed import launch, shard_micro_batches
from iceburg.training.finetuner import ICEBURGFineTuner

WORKER = Path(__file__).with_name("dist_worker.py")
# Same data, schedule and global batch (2 rows per optimizer step) in both runs. lora_dropout=0:
# dropout draws differ between one process and two, which would break float equality.
COMMON = dict(model_type="dissident", max_steps=6, save_steps=2, batch_size=1, max_seq_length=256,
              learning_rate=1e-3, lora_dropout=0.0, curriculum_strategy="novel_first", num_threads=1)


def test_shard_micro_batches_interleaves_and_pads_with_zero_weight():
    mbs = ["a", "b", "c", "d", "e"]
    r0, r1 = shard_micro_batches(mbs, 0, 2), shard_micro_batches(mbs, 1, 2)
    assert r0 == [("a", 1.0), ("c", 1.0), ("e", 1.0)]
    assert r1 == [("b", 1.0), ("d", 1.0), ("a", 0.0)]  # same count on every rank; the filler weighs 0
    assert shard_micro_batches(mbs, 0, 1) == [(m, 1.0) for m in mbs]


class Batches:
    def __init__(self):
        self.batches, self.done = [], 0

    def on_batch(self, ids):
        self.batches.append((self.done + 1, ids))

    def on_step(self, step, metrics):
        self.done = step

    def on_eval(self, step, loss):
        pass


def _losses(metrics: Path) -> dict[int, float]:
    out = {}
    for line in metrics.read_text().splitlines():
        m = json.loads(line)
        if m["type"] == "train":
            out[m["step"]] = m["loss"]  # after a resume the re-run step's line wins
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The 1-process run: 2 micro-batches of 1 row per step (the 2-process runs: 1 per rank)."""
    out, ref = tmp_path_factory.mktemp("one"), Batches()
    ICEBURGFineTuner(TrainingConfig(output_dir=str(out), output_name="r", gradient_accumulation_steps=2,
                                    **COMMON), callbacks=[ref]).train()
    return ref.batches, _losses(out / "r" / "metrics.jsonl")


@pytest.mark.slow
def test_two_processes_kill_resume_equal_one_process(tmp_path, reference):
    ref_batches, one = reference

    out, rec = tmp_path / "two", tmp_path / "rec"
    rec.mkdir()
    cfg = dict(COMMON, output_dir=str(out), output_name="r", gradient_accumulation_steps=1)
    started = time.time()
    rc = launch([str(WORKER), json.dumps(cfg), str(rec), "1", "3"], nproc=2, module=None)
    assert rc != 0 and time.time() - started < 120  # rank 1 died: everything stopped, no hang
    run = out / "r"
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not (run / "result.json").exists()
    steps_written = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
                     if json.loads(x)["type"] == "train"]
    assert steps_written == sorted(set(steps_written))  # one writer: no step logged twice

    # each rank got micro-batches r, r+2, ... of every global step, in the curriculum's order
    for rank in (0, 1):
        got = [(json.loads(x)["step"], json.loads(x)["ids"]) for x in (rec / f"rank{rank}.jsonl").read_text().splitlines()]
        assert got and got == ref_batches[rank::2][:len(got)]

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
    flags = ["--model-type", "dissident", "--output-dir", str(out), "--output-name", "r", "--max-steps", "6",
             "--save-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--max-seq-length", "256",
             "--learning-rate", "1e-3", "--lora-dropout", "0", "--curriculum", "novel_first", "--threads", "1",
             "--nproc", "2", "--resume", "--json"]
    done = subprocess.run([sys.executable, "-m", "iceburg.cli", *flags], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["resumed_from_step"] == 2 and result["steps"] == 6
    assert result["plan"]["world_size"] == 2 and result["plan"]["effective_batch_size"] == 2
    world = json.loads((run / "plan.json").read_text())["world"]
    assert (world["world_size"], world["mode"], world["backend"]) == (2, "ddp", "gloo")

    two = _losses(run / "metrics.jsonl")
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), (step, one, two)
    assert sorted(p.name for p in out.iterdir()) == ["r"]  # no other rank made a folder


@pytest.mark.slow
def test_fsdp_two_processes_equal_one_process(tmp_path, reference):
    """FSDP2 (base sharded per decoder layer): same trajectory; its gathered checkpoint and the
    merged model are written by rank 0."""
    _, one = reference
    rec = tmp_path / "rec"
    rec.mkdir()
    cfg = dict(COMMON, output_dir=str(tmp_path), output_name="r", gradient_accumulation_steps=1,
               distributed="fsdp")
    assert launch([str(WORKER), json.dumps(cfg), str(rec), "-1", "0"], nproc=2, module=None) == 0
    run = tmp_path / "r"
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert {k: state[k] for k in ("step", "format")} == {"step": 4, "format": "fsdp-full"}
    assert len(state["plan"]) == 16  # the step plan's fingerprint: a resume with another plan is refused
    assert (run / "merged" / "model.safetensors").exists()
    fsdp = _losses(run / "metrics.jsonl")
    assert sorted(fsdp) == sorted(one)
    for step in one:
        assert fsdp[step] == pytest.approx(one[step], abs=1e-5), (step, one, fsdp)


def test_launcher_drops_its_own_flag_from_the_children_argv():
    from iceburg.training.distributed import _without_flag

    assert _without_flag(["--a", "--nproc", "2", "--nproc=3", "x"], "--nproc") == ["--a", "x"]
