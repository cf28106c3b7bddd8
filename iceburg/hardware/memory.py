"""Peak training memory of one LoRA/QLoRA run, term by term, from the real model's shape.

    peak = weights + LoRA (weights, grads, AdamW states) + saved activations + loss transient
           + runtime

* weights: every parameter in the training dtype; under QLoRA the projections are NF4 with double
  quantisation, 4.127 bits per parameter (Dettmers et al. 2023, "QLoRA", section 3), while
  embeddings, norms and lm_head stay in the compute dtype (bitsandbytes skips them).
* LoRA: adapters are kept in fp32 by peft (`autocast_adapter_dtype=True`), so weights, gradients
  and AdamW's two moments cost 4 x 4 bytes per adapter parameter.
* activations: the bytes autograd saves for backward, *measured* on the model's own code on the
  meta device (`model_shape.activation_probe`), with the planned micro-batch, sequence length,
  LoRA rank, targets and dropout. With gradient checkpointing only each layer's input is kept,
  plus one layer's activations while it is recomputed (Chen et al. 2016, "Training Deep Nets with
  Sublinear Memory Cost").
* loss transient: the logits tensor (held by the model output) plus the fp32 gradient buffers of
  cross-entropy (two B x T x V fp32 tensors live at the start of backward), which autograd does not
  save and the probe therefore cannot see. For a 150k vocabulary this is the largest activation.
  iceburg's trainer computes logits only at supervised positions (`logits_to_keep`), so T here is
  the number of kept positions (`kept_positions`), and the probe runs that same loss.
* GRPO (`loop="grpo"`, training/grpo.py): the loss forward runs each prompt once and its G answers on
  the prompt's cache (`shared_prefix_logps`), so activations scale with prompt + G x answer tokens, not
  G full rows; logits at every answer position (not chunked); and a sampling term: the merged copy of
  the adapted weights and the head that sampling reads (kept through the step on CPU,
  `sampling_copy_kept`), and the sampling phase's KV cache (`_grpo_estimate`).
* runtime: on CPU the process itself (Python, torch, transformers, peft) as measured by
  bench/memory_planner.py; on GPUs the CUDA context is already outside the free memory we read.
"""

from __future__ import annotations

import ctypes
import math
import logging
import platform
from dataclasses import asdict, dataclass

import torch

from .model_shape import ModelShape, activation_probe, head_apart_shape

logger = logging.getLogger(__name__)

# glibc raises its mmap threshold dynamically up to 32 MiB (mallopt(3), M_MMAP_THRESHOLD), so
# activation-sized tensors land in the heap, and freed heap memory is kept by the process. Measured
# on an 8-layer SmolLM-shaped model, micro-batch 4 x 512 tokens, LoRA r=16: peak RSS 3880 vs 3280
# MiB (+18%) without checkpointing and 2957 vs 2252 MiB (+31%) with it, default vs a fixed 1 MiB
# threshold, which sends every larger tensor to mmap, returned to the OS on free.
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def configure_cpu_allocator() -> bool:
    """Make freed tensor memory go back to the OS on glibc Linux (call once before CPU training).

    The CPU memory estimate assumes this setting. Returns False where it does not apply
    (macOS, Windows, musl) and nothing is changed.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    logger.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, ok)
    return ok


# glibc's default (dynamic) threshold keeps freed activation memory in the heap for reuse: no page
# faults per step, but a higher peak. Measured on SmolLM2-135M at 4 x 512, LoRA r16 on all linear
# layers, 2 threads, one run (bench/results/training_throughput_smollm2-135m_s5alloc_L512.md (git 73b5661)):
# 84.4 supervised tok/s at 9.98 GB peak RSS with glibc's default vs 59.5 tok/s at 5.25 GB with the
# fixed threshold (1.42x the speed for 1.9x the memory; the planner estimated 6.43 GiB, so the
# default's peak was 1.45x the estimate). The estimate assumes the fixed threshold, so the default
# is kept only where DYNAMIC_HEAP_FACTOR x the estimate fits the plan's memory budget.
DYNAMIC_HEAP_FACTOR = 2.0
# Re-measured with the loop that runs (chunked head, segment attention, boolean dropout masks;
# bench/results/memory_planner_smollm2_grid.md, SmolLM2-135M shape at 2/4/8 x 512): glibc's peak
# minus the fixed threshold's was 0.80 / 0.85 / 0.90 x the estimated activations (1.56-1.78x the
# estimate, so DYNAMIC_HEAP_FACTOR stays a safe bound). 0.9, the largest, is the planner's model.
GLIBC_RETAINED_SHARE = 0.9


def fixed_mmap_threshold_needed(estimated_peak_bytes: int, budget_bytes: int) -> bool:
    """Whether CPU training must return freed memory to the OS (`configure_cpu_allocator`) for the
    planner's estimate to hold; False where glibc's faster default fits even at
    DYNAMIC_HEAP_FACTOR x the estimate."""
    return estimated_peak_bytes * DYNAMIC_HEAP_FACTOR > budget_bytes


# Resident memory of a Python process after importing torch 2.13 + transformers 5.24 + peft 0.21
# and running one tiny LoRA step: 378-398 MiB measured on the project's x86-64 CPU machine
# (`import_rss` in bench/results/memory_planner.json (git ecdbf3f) records it for every run).
CPU_RUNTIME_BYTES = 400 * 2**20

# QLoRA NF4 + double quantisation: 4.127 bits per quantised parameter (QLoRA paper, section 3).
NF4_BITS_PER_PARAM = 4.127

# training/trainer.HEAD_CHUNK: rows of logits the fused head loss has alive at once; about three
# chunk-sized fp32 tensors exist while one chunk is computed (logits, logsumexp's shifted copy, the
# gathered/probability buffers reuse the logits in place).
HEAD_CHUNK_ROWS = 256
HEAD_CHUNK_COPIES = 3

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ADAPTER_BYTES = 4  # fp32 adapters, gradients, AdamW exp_avg and exp_avg_sq


@dataclass
class MemoryEstimate:
    """Peak bytes of one training step, by term. `total` is what the process/device peaks at."""

    weights: int
    lora: int  # adapter weights + gradients + AdamW states
    activations: int  # saved for backward (with or without gradient checkpointing)
    loss_transient: int  # logits and cross-entropy gradient buffers
    runtime: int  # process overhead counted in this device's memory (CPU RSS only)
    lora_params: int
    loop: str = "sft"  # the loop modelled (estimate_training_memory); not a byte count
    # GRPO: the merged sampling copy, plus what the sampling phase's KV cache and logits need beyond
    # the training phase's activations and loss (0 where the training phase is the larger)
    sampling: int = 0

    @property
    def training_bytes(self) -> int:
        """Everything the run adds on top of an already-started runtime."""
        return self.weights + self.lora + self.activations + self.loss_transient + self.sampling

    @property
    def total(self) -> int:
        return self.training_bytes + self.runtime

    @property
    def glibc_total(self) -> int:
        """Peak RSS under glibc's default allocator (CPU): freed activation-sized buffers stay in
        the heap, GLIBC_RETAINED_SHARE of the activations on top of the fixed-threshold peak."""
        return self.total + int(GLIBC_RETAINED_SHARE * self.activations)

    def to_dict(self) -> dict[str, int]:
        d = asdict(self)
        del d["loop"]
        d["total"] = self.total
        if self.runtime and self.loop != "mlx":  # CPU under glibc (MLX keeps its own buffer cache)
            d["glibc_total"] = self.glibc_total
        return d


def weight_bytes(shape: ModelShape, precision: str, qlora: bool) -> int:
    if not qlora:
        return shape.param_count * DTYPE_BYTES[precision]
    quantised = shape.linear_params
    rest = shape.param_count - quantised
    return int(quantised * NF4_BITS_PER_PARAM / 8) + rest * DTYPE_BYTES[precision]


def kept_positions(seq_len: int, micro_batch: int, supervised_fraction: float | None) -> int | None:
    """Positions per row at which iceburg's loop computes logits: those any row of the micro-batch
    supervises. With a share f of supervised tokens per row, assumed independent across rows, that
    is 1 - (1 - f)^B of the row (packed rows mix whole transcripts, so their masks do not line up)."""
    if supervised_fraction is None:
        return None
    share = 1 - (1 - min(1.0, max(0.0, supervised_fraction))) ** micro_batch
    return max(1, min(seq_len, math.ceil(seq_len * share)))


def estimate_training_memory(shape: ModelShape, *, micro_batch: int, seq_len: int, precision: str,
                             lora_r: int, targets: list[str], gradient_checkpointing: bool,
                             qlora: bool = False, lora_dropout: float = 0.05, device_kind: str = "cpu",
                             trust_remote_code: bool = False, supervised_fraction: float | None = 1.0,
                             world_size: int = 1, loop: str = "sft", packing: bool = True, grpo_group: int = 4,
                             completion_length: int = 0, prompt_length: int | None = None) -> MemoryEstimate:
    """Peak memory of LoRA training steps for `shape` with these settings (no weights are loaded).

    `supervised_fraction` (share of tokens that carry loss) models iceburg's loop, which computes
    logits only at positions some row of the micro-batch supervises; 1.0 is the upper bound,
    None models Hugging Face's full-sequence loss (`labels=`). `loop="preference"` models the
    DPO/ORPO/KTO loop (training/preference.py): `micro_batch` padded rows (chosen and rejected),
    logits and log-sum-exp at every position, torch's own LoRA dropout; `loop="mlx"` the MLX SFT step;
    `loop="grpo"` GRPO's torch step (`micro_batch` rows = prompts x `grpo_group` answers of up to
    `completion_length` tokens, prompts up to `prompt_length`, at most `seq_len` - `completion_length`)."""
    if loop == "mlx":  # measured by MLX itself (`packing`: block-diagonal masks; _mlx_estimate)
        return _mlx_estimate(shape, micro_batch, seq_len, precision, lora_r, targets, lora_dropout, device_kind,
                             supervised_fraction, packing)
    if loop == "grpo":
        return _grpo_estimate(shape, micro_batch, seq_len, precision, lora_r, targets, gradient_checkpointing, qlora,
                              lora_dropout, device_kind, trust_remote_code, grpo_group, completion_length,
                              prompt_length)
    if loop not in ("sft", "preference"):
        raise ValueError(f"loop must be 'sft', 'preference', 'grpo' or 'mlx', not {loop!r}")
    n_lora = shape.lora_params(lora_r, targets)
    act_dtype = TORCH_DTYPES[precision]
    preference = loop == "preference"
    # The trainer's CPU loop (training/trainer.py): boolean LoRA dropout masks in every CPU process,
    # and for head-apart families in a single process the head runs only at supervised (row,
    # position) pairs, HEAD_CHUNK rows at a time.
    cpu_loop = device_kind == "cpu" and supervised_fraction is not None and not preference
    apart = cpu_loop and world_size == 1 and head_apart_shape(shape.config)
    if apart:
        kept = max(1, math.ceil(seq_len * min(1.0, max(0.0, supervised_fraction))))
    else:
        kept = None if preference else kept_positions(seq_len, micro_batch, supervised_fraction)
    # Probed for one sequence and scaled: with flash/memory-efficient attention every saved tensor
    # grows linearly with the batch (checked against direct probes in tests/hardware).
    per_row, outside_row = activation_probe(shape, act_dtype, 1, seq_len, lora_r, targets,
                                            lora_dropout, trust_remote_code, kept, cpu_loop,
                                            head_apart=world_size == 1, sequence_logps=preference)
    per_layer, outside = per_row * micro_batch, outside_row * micro_batch
    act_bytes = DTYPE_BYTES[precision]
    tokens = micro_batch * seq_len
    if gradient_checkpointing:
        # Each checkpointed layer keeps its input hidden states; one layer is live at a time.
        activations = shape.num_layers * tokens * shape.hidden_size * act_bytes + per_layer + outside
    else:
        activations = shape.num_layers * per_layer + outside
    activations += _qlora_transient(shape, act_bytes) if qlora else 0
    # the chunked head: one chunk's fp32 logits, logsumexp's shifted copy and the softmax written in place
    loss_transient = (HEAD_CHUNK_ROWS * shape.vocab_size * 4 * HEAD_CHUNK_COPIES if apart else
                      micro_batch * (seq_len if kept is None else kept) * shape.vocab_size * (act_bytes + 2 * 4))
    return MemoryEstimate(weights=weight_bytes(shape, precision, qlora), lora=n_lora * ADAPTER_BYTES * 4,
                          activations=int(activations), loss_transient=int(loss_transient),
                          runtime=CPU_RUNTIME_BYTES if device_kind == "cpu" else 0, lora_params=n_lora)


def _qlora_transient(shape: ModelShape, act_bytes: int) -> int:
    """bitsandbytes dequantises one projection at a time for the matmul: one transient copy of the
    largest projection in the compute dtype."""
    return max((li.in_features * li.out_features for li in shape.linears), default=0) * act_bytes


def _grpo_estimate(shape: ModelShape, micro_batch: int, seq_len: int, precision: str, lora_r: int,
                   targets: list[str], gradient_checkpointing: bool, qlora: bool, lora_dropout: float,
                   device_kind: str, trust_remote_code: bool, group: int, completion: int,
                   prompt_length: int | None = None) -> MemoryEstimate:
    """GRPO's step (training/grpo.py). Two phases, the larger sets the peak:
    - sampling: the G answers decoded with a KV cache of prompt + answer positions per row, over the
      merged copy of the adapted weights and the head (`merged_lora`);
    - training: `shared_prefix_logps` runs each prompt once and its G answers on the prompt's cache
      repeated to G rows (activations per token as the SFT probe measures them, times prompt + G x answer
      tokens, plus the repeated cache), with float32 logits at every answer position; under gradient
      checkpointing the plain full forward runs (G full rows, logits at the answer positions).
    On CPU the merged copy is kept through the training phase too (`sampling_copy_kept`); elsewhere it is
    re-made for each sampling call and freed. Every answer is taken at the full budget and every prompt
    at the longest (`prompt_length`, the data's, when known): the peak of the run's worst step."""
    completion = max(1, min(completion or seq_len // 2, seq_len - 1))
    prompts = max(1, micro_batch // group)
    prompt_len = seq_len - completion if prompt_length is None else max(1, min(prompt_length, seq_len - completion))
    rows = prompts * group
    act_dtype, act_bytes = TORCH_DTYPES[precision], DTYPE_BYTES[precision]
    cpu = device_kind == "cpu"
    n_lora = shape.lora_params(lora_r, targets)
    per_row, outside_row = activation_probe(shape, act_dtype, 1, seq_len, lora_r, targets, lora_dropout,
                                            trust_remote_code, completion, cpu, head_apart=False)
    cfg = shape.config
    kv_heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 1)
    head_dim = getattr(cfg, "head_dim", None) or shape.hidden_size // max(1, getattr(cfg, "num_attention_heads", 1))
    kv_per_token = shape.num_layers * 2 * kv_heads * head_dim * act_bytes
    if gradient_checkpointing:  # G full rows: each layer's input kept, one layer's activations live
        activations = shape.num_layers * rows * seq_len * shape.hidden_size * act_bytes + (per_row + outside_row) * rows
    else:
        tokens = prompts * (prompt_len + group * completion)
        activations = (shape.num_layers * per_row * tokens / seq_len + rows * prompt_len * kv_per_token
                       + outside_row * rows)
    activations += _qlora_transient(shape, act_bytes) if qlora else 0
    loss_transient = rows * completion * shape.vocab_size * (act_bytes + 2 * 4)
    wanted = set(targets)
    # quantized bases sample unmerged: only the head is copied (grpo.sampling_copy_bytes)
    merged = 0 if qlora else sum(li.in_features * li.out_features for li in shape.linears if li.short in wanted)
    copy = (merged + shape.vocab_size * shape.hidden_size) * act_bytes
    # decoding: the cache of every row's prompt and answer, and a few (rows, vocab) float32 logits
    decode = rows * (prompt_len + completion + 1) * kv_per_token + 4 * rows * shape.vocab_size * 4
    training = activations + loss_transient
    sampling = copy + max(0, decode - training) if cpu else max(copy + decode - training, 0)
    return MemoryEstimate(weights=weight_bytes(shape, precision, qlora), lora=n_lora * ADAPTER_BYTES * 4,
                          activations=int(activations), loss_transient=int(loss_transient),
                          runtime=CPU_RUNTIME_BYTES if cpu else 0, lora_params=n_lora, loop="grpo",
                          sampling=int(sampling))


def _mlx_estimate(shape: ModelShape, micro_batch: int, seq_len: int, precision: str, lora_r: int,
                  targets: list[str], lora_dropout: float, device_kind: str, supervised_fraction: float | None,
                  packing: bool) -> MemoryEstimate:
    """The MLX step: weights in the plan's precision (models.mlx.load_mlx_model casts them), fp32
    adapters with gradients and AdamW's two states, and what MLX measures for the step itself (the
    head and loss included, so no separate loss transient)."""
    from .mlx_memory import mlx_activation_probe

    n_lora = shape.lora_params(lora_r, targets)
    probe = mlx_activation_probe(shape.config.to_dict(), precision, seq_len,
                                 1.0 if supervised_fraction is None else supervised_fraction,
                                 lora_r, targets, lora_dropout, packing)
    return MemoryEstimate(weights=weight_bytes(shape, precision, False), lora=n_lora * ADAPTER_BYTES * 4,
                          activations=probe.bytes(micro_batch, seq_len, shape.num_layers), loss_transient=0,
                          runtime=CPU_RUNTIME_BYTES if device_kind == "cpu" else 0, lora_params=n_lora, loop="mlx")
