"""Qwen families: Qwen2.5 (model_type "qwen2") and Qwen3 ("qwen3").

GGUF: llama.cpp's QWEN2 / QWEN3 archs use NEOX RoPE: no q/k permutation.
"""

from __future__ import annotations

from .llama import TINY
from .registry import Architecture, DocRow, Family, Fixture, GgufSpec, register

# Qwen2: q/k/v biases and tied embeddings (as Qwen2.5-0.5B/1.5B).
QWEN2 = Architecture("qwen2", GgufSpec("qwen2"), head_apart=True,
                     random_shape={**TINY, "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6})
# Qwen3: q/k RMSNorm per head, explicit head_dim, tied embeddings (as Qwen3-0.6B).
QWEN3 = Architecture("qwen3", GgufSpec("qwen3"), head_apart=True,
                     random_shape={**QWEN2.random_shape, "head_dim": 16})

_QWEN_EOS = ("<|im_end|>", "<|endoftext|>")

register(
    Family("qwen2.5", (QWEN2,), ollama={"qwen2.5": {
        "default": "7b", **{s: f"Qwen/Qwen2.5-{s.upper()}-Instruct" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")}}},
        ollama_tag="qwen2.5:7b", chat_template="chatml", tool_template="chatml",
        fixture=Fixture("qwen2", "Qwen-Qwen2.5-7B-Instruct", _QWEN_EOS, notes=("qkv bias, tied embeddings (as 0.5B/1.5B)",)),
        doc=DocRow("qwen2: qkv bias, tied", "qwen2 (151,665 + padding)", "Qwen-Qwen2.5-7B-Instruct")),
    # Qwen3 releases one hybrid-thinking chat model per size (no "-Instruct" suffix).
    Family("qwen3", (QWEN3,), ollama={"qwen3": {
        "default": "8b", **{s: f"Qwen/Qwen3-{s.upper()}" for s in ("0.6b", "1.7b", "4b", "8b", "14b", "32b")}}},
        # Its plain chats render as ChatML; its tool format is the chatml tool family's Qwen3 variant
        # (think block after the last user message), Go-proven (tests/export/test_tool_templates_new_families.py).
        ollama_tag="qwen3:0.6b", chat_template="chatml", tool_template="chatml", reasoning=("<think>", "</think>"),
        fixture=Fixture("qwen2", "Qwen-Qwen3-0.6B", _QWEN_EOS, added_special=("<think>", "</think>"),
                        notes=("Qwen3 shares Qwen2.5's BPE; its <think>/</think> (ids 151667/151668 in Qwen3) are added here",
                               "q/k RMSNorm per head; the template rewrites history -> one example per assistant turn")),
        doc=DocRow("qwen3: per-head q/k RMSNorm, explicit head_dim, tied", "qwen2 + `<think>`/`</think>` added",
                   "Qwen-Qwen3-0.6B")),
)

# Qwen3.5 (text model, model_type "qwen3_5_text"): 3 Gated DeltaNet (linear attention) layers then 1
# gated softmax-attention layer, partial RoPE (1/4 of head_dim), q/k norms. iceburg's writer has no
# spec for it: its GGUF comes from llama.cpp's converter (arch qwen35, export/gguf_convert.py).
QWEN35 = Architecture(
    "qwen3_5_text", None, llama_cpp_arch="qwen35",
    random_shape=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                      intermediate_size=128, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                      linear_num_value_heads=4, linear_conv_kernel_dim=4, tie_word_embeddings=True,
                      max_position_embeddings=512, rms_norm_eps=1e-6,
                      layer_types=["linear_attention"] * 3 + ["full_attention"],
                      # interleaved MRoPE sections sum to half the rotary dims (64 x 1/4 / 2 = 8; the real
                      # [11, 11, 10] for head_dim 256): llama.cpp's qwen35 loader requires the sections
                      rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                       "mrope_section": [3, 3, 2], "mrope_interleaved": True}),
    # The Gated DeltaNet blocks (linear_attn.*: in_proj_qkvz/ba, out_proj) are a recurrence, not
    # softmax attention: LoRA's default targets leave them out, as Qwen's own fine-tuning recipes do
    # not name them (the attention and MLP projections carry the adapter).
    lora_exclude={"linear_attn": "Gated DeltaNet (linear attention) block: recurrent state, not softmax attention"})

# The released checkpoints (Qwen/Qwen3.5-*) carry the multimodal wrapper's model_type "qwen3_5"
# (Qwen3_5ForConditionalGeneration); llama.cpp's converter writes its text model as qwen35 too.
QWEN35_VL = Architecture("qwen3_5", None, llama_cpp_arch="qwen35", lora_exclude=QWEN35.lora_exclude)

register(
    # No Ollama library names listed: none checked against ollama.com for this family yet.
    Family("qwen3.5", (QWEN35, QWEN35_VL), reasoning=("<think>", "</think>"), chat_template="chatml-block",
           tool_template="chatml-block",
        fixture=Fixture("qwen35", "Qwen3.5-4B", _QWEN_EOS,
                        notes=("3 linear-attention (Gated DeltaNet) layers + 1 softmax layer, partial RoPE 1/4",
                               "GGUF through llama.cpp's converter (arch qwen35)")),
        doc=DocRow("qwen3_5_text: 3 Gated DeltaNet layers + 1 gated attention, partial RoPE, tied", "qwen35",
                   "Qwen3.5-4B", "(no Ollama library tag listed)")),
)
