"""iceburg-tiny: deterministic bytes, an ordinary HF folder, never pre-trained on held-out records."""

from __future__ import annotations

import hashlib
import json

import iceburg.models.tiny as tiny
from iceburg.config import TrainingConfig
from iceburg.data import sample_data_path
from iceburg.data.loader import read_records
from iceburg.data.split import split_eval


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_byte_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "PRETRAIN_STEPS", 3)  # the recipe's determinism, at a fraction of the cost
    texts = tiny.corpus_texts()
    a = tiny.build_tiny_model(tmp_path / "a", texts)
    b = tiny.build_tiny_model(tmp_path / "b", texts)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert sha(a / name) == sha(b / name), name


def test_cached_model_is_a_plain_hf_folder(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama" and tok.is_fast and tok.chat_template
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == [tok.eos_token_id]
    info = json.loads((tiny_model_dir / "iceburg_tiny.json").read_text())
    assert info["corpus_sha256_16"] == tiny.corpus_hash(tiny.corpus_texts())


def test_default_eval_split_was_held_out_of_pretraining():
    corpus = set(tiny.corpus_texts())
    d = TrainingConfig()
    for t in ("base", "surveyor", "dissident", "synthesist", "oracle"):
        recs = list(read_records([sample_data_path(t)]))
        _, ev = split_eval(recs, d.eval_fraction, d.seed)
        assert ev
        for r in ev:
            # a turn that only calls a tool has empty text (docs/tools.md): nothing to hold out
            answers = [m["content"] for m in r.messages if m["role"] == "assistant" and m["content"].strip()]
            assert not any(a in corpus for a in answers), (t, r.line)
