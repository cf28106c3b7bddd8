"""Training callbacks the resume tests share (tests/ is on sys.path: pytest's rootdir conftest)."""

from __future__ import annotations


class StopAt:
    """Records every micro-batch's example ids and every step's metrics line, and interrupts the
    run (KeyboardInterrupt, as Ctrl-C would) right after step `step`."""

    def __init__(self, step: int):
        self.step = step
        self.batches: list[list[str]] = []
        self.steps: dict[int, dict] = {}

    def on_batch(self, ids):
        self.batches.append(ids)

    def on_step(self, step, metrics):
        self.steps[step] = metrics
        if step == self.step:
            raise KeyboardInterrupt

    def on_eval(self, step, loss):
        pass
