"""Digests, the bundled MiniLM embedder and the on-disk .npy cache (real model, no mocks)."""

from __future__ import annotations

import numpy as np

from iceburg.emergence import EmbeddingCache, SentenceEmbedder, record_digest
from iceburg.records import Record

from emergence_helpers import conv


def test_digest_keeps_the_answer_when_the_prompt_is_long():
    r = conv("why " * 1000, "The answer is forty-two.")
    d = record_digest(r, max_tokens=128)
    assert d.endswith("The answer is forty-two.")
    assert len(d) < 64 * 4 + 40  # user part capped at half the token budget (~4 chars/token)
    only_user = Record(messages=[{"role": "user", "content": "hello there"}])
    assert record_digest(only_user) == "hello there"


def test_cache_round_trip_through_npy_shards(tmp_path):
    c = EmbeddingCache(tmp_path)
    v = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    c.put(["a", "b", "c"], v)
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".keys", ".npy"]  # numpy arrays and text, nothing pickled
    fresh = EmbeddingCache(tmp_path)  # a new process would see the same
    got, missing = fresh.get(["c", "x", "a"])
    assert missing == [1]
    np.testing.assert_array_equal(got[0], v[2])
    np.testing.assert_array_equal(got[2], v[0])
    assert np.load(next(tmp_path.glob("*.npy")), allow_pickle=False).shape == (3, 384)


def test_embeddings_measure_meaning_and_rerun_hits_the_cache(embedder: SentenceEmbedder, tmp_path):
    recs = [conv("How does sleep affect memory?", "Sleep consolidates memories; deep sleep replays them."),
            conv("Does sleep help memory?", "Memories are consolidated during sleep, especially deep sleep."),
            conv("How do I bake sourdough bread?", "Feed the starter, autolyse the flour, fold, proof, bake hot.")]
    e = SentenceEmbedder(cache_dir=tmp_path)
    e._model = embedder._load()  # share the loaded weights; cache is this test's own
    v = e.embed_records(recs)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.7 > 0.2 > v[0] @ v[2]  # paraphrases close, unrelated far
    assert (e.hits, e.misses) == (0, 3)
    again = SentenceEmbedder(cache_dir=tmp_path)  # new object: reads the shards, loads no model
    v2 = again.embed_records(recs)
    assert (again.hits, again.misses) == (3, 0) and again._model is None
    np.testing.assert_array_equal(v, v2)
    # a different token budget is a different key: no stale hits
    other = SentenceEmbedder(cache_dir=tmp_path, max_tokens=32)
    other._model = embedder._load()
    other.embed_records(recs[:1])
    assert other.misses == 1
    other._model.max_seq_length = embedder.max_tokens  # shared model: restore its budget


def test_embedding_shows_a_progress_bar_when_asked(embedder: SentenceEmbedder, monkeypatch, capsys):
    import iceburg.emergence.embedding as embedding
    from iceburg import progress

    monkeypatch.setattr(embedding, "EMBED_CHUNK", 4)
    e = SentenceEmbedder(use_cache=False)
    e._model = embedder._load()
    progress.set_enabled(True)
    try:
        emb = e.embed_records([conv("Tell me one fact.", f"Fact number {i}.") for i in range(10)])
    finally:
        progress.set_enabled(None)
    assert emb.shape == (10, 384)
    err = capsys.readouterr().err
    assert "embedding:" in err and "/10" in err  # one bar over the 10 digests, moved per chunk of 4


def test_embedding_streams_in_chunks_with_one_shard_each(embedder: SentenceEmbedder, tmp_path, monkeypatch):
    """Issue 13 (100k-record RSS): misses are embedded and cached chunk by chunk; the rows equal a
    one-call embedding, a repeated digest is embedded once, and every chunk is its own shard."""
    import iceburg.emergence.embedding as embedding

    texts = ["Sleep consolidates memories.", "Feed the starter, then fold.", "Tides follow the moon.",
             "Sleep consolidates memories.", "Rust has no garbage collector."]
    recs = [conv("Tell me one fact.", t) for t in texts]
    monkeypatch.setattr(embedding, "EMBED_CHUNK", 2)
    e = SentenceEmbedder(cache_dir=tmp_path)
    e._model = embedder._load()
    v = e.embed_records(recs)
    assert e.misses == 4  # the repeated digest once
    assert len(list(tmp_path.glob("shard-*.keys"))) == 2  # 4 distinct misses, chunks of 2
    np.testing.assert_array_equal(v[3], v[0])
    one_call = e.embed_texts([record_digest(r, e.max_tokens) for r in recs])
    # fp32: equal to float rounding; bf16 (auto on AMX/AVX512-BF16 CPUs): a chunk pads to its own
    # longest text, and bf16 rounds each batch's sums differently (measured up to 1.5e-3 per
    # component on a Xeon), which is why embeddings are compared by cosine there
    if e.dtype == "fp32":
        np.testing.assert_allclose(v, one_call, atol=1e-5)
    else:
        assert np.min(np.sum(v * one_call, axis=1)) > 0.999  # unit rows: cosine similarity
