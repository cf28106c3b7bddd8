"""Data loading, validation and the bundled sample data."""

from __future__ import annotations

from pathlib import Path

from ..config import ModelType

SAMPLE_DIR = Path(__file__).parent / "sample"


def sample_data_path(model_type: ModelType | str) -> Path:
    """The bundled JSONL transcripts for one model type (`iceburg/data/sample/<type>.jsonl`)."""
    mt = ModelType.parse(model_type)
    return SAMPLE_DIR / f"{mt.short}.jsonl"
