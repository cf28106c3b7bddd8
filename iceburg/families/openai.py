"""OpenAI's open-weight family: gpt-oss (model_type "gpt_oss").

MoE (top-k routed experts with biases, clamped SwiGLU), attention sinks, alternating sliding /
full attention, YaRN RoPE, and the harmony chat format. iceburg's writer has no spec for it: its
GGUF comes from llama.cpp's converter (arch gpt-oss, export/gguf_convert.py), which also writes
the experts llama.cpp runs as MXFP4 where the checkpoint ships them so (here F16: random weights).
"""

from __future__ import annotations

from .registry import Architecture, DocRow, Family, Fixture, register

GPT_OSS = Architecture(
    "gpt_oss", None, llama_cpp_arch="gpt-oss",
    # Sliding window 128 (gpt-oss's own) and plain RoPE: on this fixture, LoRA-trained 2 steps,
    # llama.cpp's F16 logits disagree with transformers 5.24's by 1.79 (logit scale 7.0) with a
    # 16-token window the proof prompts cross, and by 0.127 with YaRN (factor 32, gpt-oss's own) and
    # no window, against 0.0062 with neither (measured 2026-12-05, 2-core Xeon; issue 32): both are
    # open findings, so the fixture proves the rest (MoE, sinks, alternating layers) under the limit.
    random_shape=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, sliding_window=128,
                      layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False,
                      max_position_embeddings=131072, rms_norm_eps=1e-5,
                      rope_parameters={"rope_type": "default", "rope_theta": 150000.0}),
    # The router (mlp.router) picks experts: trained, it shifts every token's routing and undoes the
    # base's load balance; LoRA's defaults leave it frozen (attention + experts carry the adapter).
    lora_exclude={"mlp.router": "MoE router: frozen so the base's expert routing and load balance stay"})

# harmony's special tokens (openai/harmony o200k_harmony); the stand-in vocabulary lacks them.
_HARMONY = ("<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>")

register(
    Family("gpt-oss", (GPT_OSS,), reasoning=("<|channel|>analysis<|message|>", "<|end|>"), chat_template="harmony",
           fixture=Fixture("llama-bpe", "openai-gpt-oss-120b", ("<|return|>", "<|call|>", "<|end|>"),
                           added_special=_HARMONY,
                           notes=("o200k_harmony has no llama.cpp vocab asset: Llama 3's BPE (the same GPT-4-style "
                                  "pre-tokenizer family) stands in, with harmony's tokens added",
                                  "4 experts top-2, alternating sliding (128) / full attention, plain RoPE",
                                  "GGUF through llama.cpp's converter (arch gpt-oss)")),
           doc=DocRow("gpt_oss: MoE 4 experts top-2, attention sinks, sliding 128 / full (plain RoPE: YaRN and a crossed "
                      "window are open findings)", "llama-bpe + harmony tokens "
                      "(stand-in: o200k_harmony has no llama.cpp asset)", "openai-gpt-oss-120b",
                      "(no Ollama library tag listed)")),
)
