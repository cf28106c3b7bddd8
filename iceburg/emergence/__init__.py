"""Emergence stage: novelty by embedding distance, emergence scores, categories and curricula.

`EmergenceProcessor().process(records, agent_type=None) -> (records, EmergenceStats)` scores every
record (components in `record.signals["emergence.*"]`, category in
`record.metadata["emergence.category"]`, category weight in `record.weight`);
`create_curriculum(scored, strategy)` turns them into the `Curriculum` the trainer follows.
See docs/emergence.md.
"""

from .curriculum import Curriculum, plain_curriculum
from .detector import DetectorOutput, EmbeddingNoveltyDetector, EmergenceDetector
from .embedding import EmbeddingCache, SentenceEmbedder, record_digest
from .processor import (
    DEFAULT_COMPONENT_WEIGHTS,
    EmergenceCategory,
    EmergenceProcessor,
    EmergenceStats,
    create_curriculum,
    process_for_emergence,
)

__all__ = [
    "Curriculum", "DEFAULT_COMPONENT_WEIGHTS", "DetectorOutput", "EmbeddingCache",
    "EmbeddingNoveltyDetector", "EmergenceCategory", "EmergenceDetector", "EmergenceProcessor",
    "EmergenceStats", "SentenceEmbedder", "create_curriculum", "plain_curriculum",
    "process_for_emergence", "record_digest",
]
