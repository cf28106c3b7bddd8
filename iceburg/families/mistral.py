"""Mistral families (model_type "mistral"): Mistral-7B-Instruct v0.3 and Mistral-Nemo.

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
