"""Run by test_distributed.py under torchrun: one fine-tuning run whose callback records the
micro-batches this rank receives, and can kill this rank (SIGKILL) after a chosen step.

    python -m torch.distributed.run --nproc_per_node 2 dist_worker.py CONFIG_JSON RECORD_DIR KILL_RANK KILL_STEP
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from iceburg.config import TrainingConfig
from iceburg.training.finetuner import ICEBURGFineTuner


class Recorder:
    def __init__(self, out: Path, kill_rank: int, kill_step: int):
        self.rank = int(os.environ.get("RANK", "0"))
        self.fh = open(out / f"rank{self.rank}.jsonl", "a", encoding="utf-8")
        self.kill = self.rank == kill_rank
        self.kill_step, self.done = kill_step, 0

    def on_batch(self, ids):
        self.fh.write(json.dumps({"step": self.done + 1, "ids": ids}) + "\n")
        self.fh.flush()

    def on_step(self, step, metrics):
        self.done = step
        if self.kill and step == self.kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_eval(self, step, loss):
        pass


if __name__ == "__main__":
    torch.set_num_threads(1)
    cfg = TrainingConfig(**json.loads(sys.argv[1]))
    ICEBURGFineTuner(cfg, callbacks=[Recorder(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))]).train()
