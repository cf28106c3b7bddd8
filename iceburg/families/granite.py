"""IBM Granite 4 (model_type "granitemoehybrid": the granite-4.0-h checkpoints).

Hybrid Mamba-2 / softmax attention (most layers Mamba-2, a few attention layers, no RoPE:
position_embedding_type "nope" as the -h checkpoints ship), routed experts beside a shared MLP,
and Granite's scalar multipliers (embedding, attention, residual, logits). iceburg's writer has no
spec for it: its GGUF comes from llama.cpp's converter (arch granitehybrid,
conversion/granite.py `GraniteHybridModel`), export/gguf_convert.py. transformers 5 saves the
layer kinds as "linear_attention"/"full_attention" where the converter of llama-cpp-python 0.3.36
reads only the legacy "mamba"/"attention": gguf_convert hands it the legacy names.
"""

from __future__ import annotations

from .registry import Architecture, DocRow, Family, Fixture, register

GRANITE_HYBRID = Architecture(
    "granitemoehybrid", None, llama_cpp_arch="granitehybrid",
    # 3 Mamba-2 layers then 1 attention layer; 4 experts top-2 + the shared MLP (as granite-4.0-h-tiny's
    # kinds, at 64 wide). Mamba: inner 2 x 64 = 8 heads x 16, one group, state 16, conv 4.
    # vocab_size 128264: the tokenizer's 128,258 rounded up to a multiple of 8, the padding the
    # converter gives a hybrid model's vocabulary (conversion/mamba.py Mamba2Model.set_vocab), so the
    # embedding rows and the written token list agree.
    random_shape=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, shared_intermediate_size=128, num_local_experts=4,
                      num_experts_per_tok=2, layer_types=["mamba", "mamba", "mamba", "attention"],
                      mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=16, mamba_d_conv=4,
                      mamba_expand=2, mamba_chunk_size=16, position_embedding_type="nope",
                      embedding_multiplier=12.0, attention_multiplier=0.0625, residual_multiplier=0.22,
                      logits_scaling=2.0, tie_word_embeddings=True, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, vocab_size=128264),
    # The Mamba-2 mixers (mamba.in_proj / out_proj) are a recurrence, not softmax attention; the MoE
    # router picks experts: both left out of LoRA's defaults (attention, shared MLP and experts carry it).
    lora_exclude={"mamba": "Mamba-2 block: recurrent state, not softmax attention",
                  "router": "MoE router: frozen so the base's expert routing and load balance stay"})

register(
    Family("granite4", (GRANITE_HYBRID,), chat_template="granite", tool_template="granite",
           fixture=Fixture("llama-bpe", "ibm-granite-granite-4.0", ("<|end_of_text|>",),
                           added_special=("<|start_of_role|>", "<|end_of_role|>"),
                           notes=("Granite 4's own vocabulary has no llama.cpp asset: Llama 3's BPE (same GPT-4-style "
                                  "pre-tokenizer family) stands in, with Granite's role tokens added",
                                  "3 Mamba-2 layers + 1 attention layer (no RoPE), 4 experts top-2 + shared MLP",
                                  "GGUF through llama.cpp's converter (arch granitehybrid)")),
           doc=DocRow("granitemoehybrid: 3 Mamba-2 layers + 1 attention (NoPE), MoE 4 experts top-2 + shared MLP, "
                      "Granite multipliers, tied", "llama-bpe + role tokens (stand-in: Granite 4's own has no "
                      "llama.cpp asset)", "ibm-granite-granite-4.0", "(no Ollama library tag listed)")),
)
