"""Phi families (model_type "phi3"): Phi-3, Phi-3.5 and Phi-4.

GGUF: llama.cpp's PHI3 arch (NEOX RoPE, no permutation); fused qkv_proj / gate_up_proj are mapped
by gguf-py's tensor map. Phi-3.5's longrope 128k scaling is not written and is refused by name.
"""

from __future__ import annotations

from .llama import TINY
from .registry import Architecture, DocRow, Family, Fixture, GgufSpec, register

# Phi-3: fused qkv_proj and gate_up_proj, no GQA (as Phi-3.5-mini: 32 heads, 32 KV heads).
PHI3 = Architecture("phi3", GgufSpec("phi3", sliding_window=True), head_apart=True,
                    random_shape={**TINY, "num_key_value_heads": 4})

register(
    Family("phi3.5", (PHI3,), ollama={"phi3.5": {"default": "3.8b", "3.8b": "microsoft/Phi-3.5-mini-instruct"}},
           ollama_tag="phi3.5:3.8b", chat_template="phi3",
           fixture=Fixture("phi-3", "microsoft-Phi-3.5-mini-instruct", ("<|endoftext|>", "<|end|>", "<|assistant|>"),
                           notes=("fused qkv_proj / gate_up_proj; default RoPE (Phi-3.5's longrope 128k scaling is not "
                                  "written by iceburg's GGUF writer and is refused there)",)),
           doc=DocRow("phi3: fused qkv_proj and gate_up_proj, no GQA", "phi-3 (32,064)", "microsoft-Phi-3.5-mini-instruct")),
    Family("phi3", (PHI3,), ollama={"phi3": {"default": "3.8b", "3.8b": "microsoft/Phi-3-mini-4k-instruct",
                                             "14b": "microsoft/Phi-3-medium-4k-instruct"}},
           ollama_tag="phi3:3.8b", chat_template="phi3"),
    # Phi-4's template (`<|im_start|>role<|im_sep|>...`) is none of the chat families iceburg translates.
    Family("phi4", (PHI3,), ollama={"phi4": {"default": "14b", "14b": "microsoft/phi-4"}}, ollama_tag="phi4:14b"),
)
