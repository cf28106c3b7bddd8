"""Mistral families (model_type "mistral"): Mistral-7B-Instruct v0.3 and Mistral-Nemo; Ministral 3 ("ministral3").

GGUF: the llama graph (llama.cpp's LLAMA arch, q/k permuted); its sliding window (4096, v0.1
only) is not applied by llama.cpp's llama arch (nor by its converter), so it is not written.
"""

from __future__ import annotations

from .llama import TINY
from .registry import Architecture, DocRow, Family, Fixture, GgufSpec, register

# Llama-shaped with a sliding window in its config.
MISTRAL = Architecture("mistral", GgufSpec("llama", permute_qk=True), head_apart=True,
                       random_shape={**TINY, "sliding_window": 4096})

_INST = ("[INST]", "[/INST]")

# mistralai repos are gated on the Hub (accept the licence, `hf auth login`).
register(
    # Ollama's `mistral` is Mistral-7B-Instruct v0.3 (ollama.com/library/mistral: "v0.3").
    Family("mistral-v0.3", (MISTRAL,), ollama={"mistral": {"default": "7b", "7b": "mistralai/Mistral-7B-Instruct-v0.3"}},
           ollama_tag="mistral:7b", chat_template="mistral-v0.3",
           fixture=Fixture("llama-spm", "mistral-v0.3", ("</s>",), added_special=_INST,
                           notes=("vocabulary: Llama 2's 32k SentencePiece BPE (Mistral's own 32,768 is not in "
                                  "llama.cpp's assets; same algorithm) + [INST]/[/INST] added as control tokens as in v0.3",
                                  "template transcribed from Mistral-7B-Instruct-v0.3 (not in llama.cpp's assets)")),
           doc=DocRow("mistral (llama graph)", "llama-spm (Llama 2, 32,000) + `[INST]`/`[/INST]` added",
                      "transcribed from Mistral-7B-Instruct-v0.3")),
    Family("mistral-nemo", (MISTRAL,), ollama={"mistral-nemo": {
        "default": "12b", "12b": "mistralai/Mistral-Nemo-Instruct-2407"}},
        ollama_tag="mistral-nemo:12b", chat_template="mistral-nemo",
        fixture=Fixture("llama-spm", "mistralai-Mistral-Nemo-Instruct-2407", ("</s>",), added_special=_INST,
                        notes=("Nemo's Tekken vocabulary (131k byte-level BPE) is not in llama.cpp's assets: Llama 2 "
                               "SPM + [INST]/[/INST] stands in; the template is Nemo's real one",)),
        doc=DocRow("mistral", "llama-spm + `[INST]`/`[/INST]`", "mistralai-Mistral-Nemo-Instruct-2407")),
)

# Ministral 3 (text model, model_type "ministral3", Ministral3ForCausalLM; the released checkpoints wrap
# it in Mistral3ForConditionalGeneration with a vision tower): the llama graph with YaRN RoPE and
# Llama 4's attention temperature scaling (llama_4_scaling_beta), which llama.cpp runs as its MISTRAL3
# arch. iceburg's writer has no spec for it: its GGUF comes from llama.cpp's converter
# (conversion/mistral3.py Ministral3Model: q/k permuted as LlamaModel, YaRN log-mul and temperature
# scale written; the converter requires rope_type "yarn"). YaRN here as Ministral 3's configs carry it
# (factor 16 over 16,384 original positions, mscale 1 / mscale_all_dim 1, beta 0.1).
MINISTRAL3 = Architecture(
    "ministral3", None, llama_cpp_arch="mistral3",
    random_shape={**TINY, "head_dim": 16, "max_position_embeddings": 262144, "rms_norm_eps": 1e-5,
                  "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0,
                                      "original_max_position_embeddings": 16384, "max_position_embeddings": 262144,
                                      "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                                      "llama_4_scaling_beta": 0.1}})

# Mistral's v13 control tokens the Ministral 3 template writes (system prompt, thinking, tools).
_MINISTRAL3_SPECIAL = (*_INST, "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]",
                       "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]")

register(
    Family("ministral3", (MINISTRAL3,), reasoning=("[THINK]", "[/THINK]"), chat_template="ministral3",
           tool_template="ministral3",
           # Llama 3's byte-level BPE, not Llama 2's SPM as for Nemo: through llama.cpp's converter the SPM
           # stand-in (a tokenizer.json without tokenizer.model) tokenized runs of spaces unlike transformers
           # (the proof's tokenization check failed; measured 2026-12-06), and Tekken is byte-level BPE too.
           fixture=Fixture("llama-bpe", "mistralai-Ministral-3-14B-Reasoning-2512", ("<|end_of_text|>",),
                           added_special=_MINISTRAL3_SPECIAL,
                           notes=("Ministral 3's Tekken vocabulary (131k byte-level BPE) has no llama.cpp asset: Llama 3's "
                                  "byte-level BPE stands in (its <|begin_of_text|>/<|end_of_text|> for <s>/</s>), with "
                                  "Mistral's control tokens added",
                                  "the template is Ministral-3-14B-Reasoning-2512's real one (default system prompt, "
                                  "[THINK] blocks)", "GGUF through llama.cpp's converter (arch mistral3)")),
           doc=DocRow("ministral3: llama graph, YaRN (factor 16) + Llama 4 attention temperature", "llama-bpe + "
                      "Mistral control tokens (stand-in: Tekken has no llama.cpp asset)",
                      "mistralai-Ministral-3-14B-Reasoning-2512", "(no Ollama library tag listed)")),
)
