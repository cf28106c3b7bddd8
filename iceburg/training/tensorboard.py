"""`--report-to tensorboard`: TensorBoard event files beside metrics.jsonl (RUN/tensorboard/).

A training callback (the trainer's on_batch/on_step/on_eval protocol) over torch's own
`SummaryWriter`, which needs the `tensorboard` package (`pip install 'iceburg[tensorboard]'`).
metrics.jsonl stays the record of truth; this is a view for people who already use TensorBoard.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingDependencyError


class TensorBoardLog:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises this when the tensorboard package is absent
            raise MissingDependencyError("tensorboard (for --report-to tensorboard)",
                                         "pip install 'iceburg[tensorboard]'") from exc
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_batch(self, example_ids: list[str]) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        for key in ("loss", "lr", "supervised_tokens_per_s", "peak_rss_mib"):
            if key in metrics:
                self.writer.add_scalar(f"train/{key}", metrics[key], step)

    def on_eval(self, step: int, eval_loss: float) -> None:
        self.writer.add_scalar("eval/loss", eval_loss, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
