"""What the planner needs to know about a base model, read from its config without loading weights.

Everything here runs on PyTorch's ``meta`` device: the real architecture class from transformers
is instantiated from the folder's ``config.json`` (so parameter counts, tied embeddings and module
names are the model's own, not a lookup table), and a forward pass on meta tensors records the
exact tensors autograd keeps for the backward pass (``saved_tensors_hooks``). Meta tensors carry
shapes and dtypes but no data, so this costs about a second even for a 14B config.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import IceburgError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearInfo:
    """One adaptable projection: its full module path and its (in, out) features."""

    name: str
    in_features: int
    out_features: int

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass
class ModelShape:
    """Sizes of a causal LM read from its config on the meta device."""

    model_type: str
    architecture: str
    param_count: int
    embedding_params: int  # input + output embeddings (stay in 16-bit under QLoRA), tied counted once
    hidden_size: int
    num_layers: int
    vocab_size: int
    linears: list[LinearInfo] = field(repr=False, default_factory=list)
    config: Any = field(repr=False, default=None)

    @property
    def linear_names(self) -> list[str]:
        """Distinct short names of the adaptable projections, in model order (q_proj, c_attn, ...)."""
        return list(dict.fromkeys(li.short for li in self.linears))

    @property
    def linear_params(self) -> int:
        return sum(li.in_features * li.out_features for li in self.linears)

    def lora_params(self, r: int, targets: list[str]) -> int:
        """Trainable parameters of rank-r LoRA on every projection whose short name is in targets."""
        wanted = set(targets)
        return sum(r * (li.in_features + li.out_features) for li in self.linears if li.short in wanted)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "architecture": self.architecture,
                "param_count": self.param_count, "embedding_params": self.embedding_params,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "vocab_size": self.vocab_size, "linear_names": self.linear_names}


def load_config(model_dir: str | Path, trust_remote_code: bool = False) -> Any:
    """The model's transformers config, with an error that names the folder and the fix."""
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise IceburgError(f"{model_dir}: no config.json; pass a Hugging Face model folder as "
                           "--base-model (or a GGUF/Ollama base, which iceburg converts into one)")
    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except ValueError as exc:  # unknown model_type or remote code required
        raise IceburgError(f"{model_dir}/config.json: {exc}") from exc


def _meta_model(config: Any, trust_remote_code: bool = False) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        except ValueError as exc:
            raise IceburgError(f"model type {config.model_type!r} is not a causal language model "
                               f"transformers can build: {exc}") from exc


def _is_projection(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2 style projections (weight is in x out)

    return isinstance(module, (nn.Linear, Conv1D))


def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = module.weight  # transformers Conv1D stores (in, out)
    return int(w.shape[0]), int(w.shape[1])


def shape_from_config(config: Any, trust_remote_code: bool = False) -> ModelShape:
    model = _meta_model(config, trust_remote_code)
    out_emb = model.get_output_embeddings()
    in_emb = model.get_input_embeddings()
    linears = []
    for name, module in model.named_modules():
        # peft's "all-linear" rule: every projection except the output layer (lm_head).
        if module is out_emb or not _is_projection(module):
            continue
        fin, fout = _features(module)
        linears.append(LinearInfo(name, fin, fout))
    params = {id(p): p.numel() for p in model.parameters()}  # tied weights counted once
    emb = {id(m.weight): m.weight.numel() for m in (in_emb, out_emb) if m is not None}
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelShape(
        model_type=config.model_type,
        architecture=type(model).__name__,
        param_count=sum(params.values()),
        embedding_params=sum(emb.values()),
        hidden_size=int(text_cfg.hidden_size),
        num_layers=int(text_cfg.num_hidden_layers),
        vocab_size=int(text_cfg.vocab_size),
        linears=linears,
        config=config,
    )


@functools.lru_cache(maxsize=16)
def _cached_shape(model_dir: str, trust_remote_code: bool) -> ModelShape:
    return shape_from_config(load_config(model_dir, trust_remote_code), trust_remote_code)


def read_model_shape(model_dir: str | Path, trust_remote_code: bool = False) -> ModelShape:
    """Parameter count, embeddings and projection names of the model in `model_dir` (no weights read)."""
    return _cached_shape(str(Path(model_dir).resolve()), trust_remote_code)


class _FlashAttentionOnMeta(torch.overrides.TorchFunctionMode):
    """Route SDPA to the flash kernel's meta implementation while probing.

    On meta tensors SDPA falls back to the math kernel, which keeps the full (T x T) attention
    matrix per head for backward. The kernels training actually uses (CPU flash attention, CUDA
    flash / memory-efficient attention) keep only q, k, v, the output and a logsumexp per row, so
    the probe uses the CPU flash op, whose meta kernel has exactly that footprint.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            causal = kwargs.get("is_causal", args[5] if len(args) > 5 else False)
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, bool(causal), attn_mask=mask, scale=kwargs.get("scale"))[0]
        if func in _GROUPED_MM and args[0].dtype != torch.bfloat16:
            # torch's meta kernel for grouped_mm (transformers' MoE experts, gpt-oss) takes BF16 only
            # ("Expected inputs of BF16 type" in fp32) while the CPU kernel runs fp32: one expert's
            # matmul gives the same output and saves the same input for backward
            return args[0] @ args[1][0]
        return func(*args, **kwargs)


_GROUPED_MM = {f for f in (getattr(torch.nn.functional, "grouped_mm", None), getattr(torch, "_grouped_mm", None)) if f}


def _with_layers(config: Any, n: int, types: list[str] | None = None) -> Any:
    """`config` cut to its first `n` layers, or to layers of the given `types` (hybrid stacks)."""
    cfg = copy.deepcopy(config)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    text.num_hidden_layers = n
    if isinstance(getattr(text, "layer_types", None), list):
        text.layer_types = list(types) if types is not None else text.layer_types[:n]
    return cfg


def _probe_layers(config: Any, saved: Any) -> tuple[int, int]:
    """(bytes per decoder layer, bytes outside the layers) from `saved(cut config)` on cuts of one and
    two layers: the difference is one layer. A hybrid stack (Qwen3.5: Gated DeltaNet layers,
    `linear_attention`, and `full_attention` ones) is cut to a full-attention layer followed by each
    layer type, since a cut of linear layers alone does not run (transformers reads the sequence
    length from an attention layer's cache: "the current Cache seem to only contain LinearAttention
    layers"); its per-layer figure is the mean over the stack's layers."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    if not (isinstance(types, list) and {"linear_attention", "full_attention"} <= set(types)):
        one, two = (saved(_with_layers(config, n)) for n in (1, 2))
        return two - one, 2 * one - two
    one = saved(_with_layers(config, 1, ["full_attention"]))
    per_type = {t: saved(_with_layers(config, 2, ["full_attention", t])) - one for t in sorted(set(types))}
    return round(sum(per_type[t] for t in types) / len(types)), one - per_type["full_attention"]


class _BoolKeepScale(torch.autograd.Function):
    """x * keep * scale saving only a boolean mask: what the trainer's CPU LoRA dropout
    (training/lora_dropout.CpuLoraDropout) keeps for backward, 1 byte per element where torch's
    dropout (the one the meta device would run) keeps a float mask of 4."""

    @staticmethod
    def forward(ctx, x, keep, scale):  # noqa: ANN001
        ctx.save_for_backward(keep)
        return x * scale

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        return grad, None, None


class _MetaBoolDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        return _BoolKeepScale.apply(x, keep, 1.0 / (1.0 - self.p))


def _bool_dropouts(model: nn.Module, p: float) -> None:
    """Swap every LoRA dropout for the CPU loop's boolean-mask one (as the trainer does on CPU)."""
    for m in model.modules():
        d = getattr(m, "lora_dropout", None)
        if isinstance(d, nn.ModuleDict):
            for k, mod in list(d.items()):
                if type(mod) is nn.Dropout and 0 < p < 1:
                    d[k] = _MetaBoolDropout(p)


def head_apart_shape(config: Any, model: nn.Module | None = None) -> bool:
    """Whether the trainer's CPU loop runs this model's head apart in chunks (the same test as
    training/trainer._head_apart: a family flagged head_apart, a plain Linear head, no soft-capping)."""
    from .. import families

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not families.head_apart(getattr(config, "model_type", None)):
        return False
    if getattr(text, "final_logit_softcapping", None) or getattr(text, "logits_scaling", None):
        return False
    return model is None or type(model.get_output_embeddings()) is nn.Linear


def _saved_bytes(config: Any, dtype: torch.dtype, micro_batch: int, seq_len: int, lora_r: int,
                 targets: list[str], lora_dropout: float, trust_remote_code: bool,
                 kept_positions: int | None = None, cpu_loop: bool = False, head_apart: bool = True,
                 sequence_logps: bool = False) -> int:
    """Bytes autograd saves for one forward on the meta device. `kept_positions`: iceburg's loss
    (logits at that many positions per row; with `cpu_loop` and a head-apart model, that many
    supervised (row, position) pairs per row through the chunked head, training/trainer.py).
    `head_apart=False`: the boolean masks without the chunked head (the distributed CPU loop).
    `sequence_logps`: the preference loop's loss (training/preference.sequence_logps: logits at
    every position, log p(target) = gather - logsumexp over the vocabulary)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    apart = cpu_loop and head_apart and kept_positions is not None and head_apart_shape(config, model)
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=lora_dropout,
                                             target_modules=targets))
    if cpu_loop:
        _bool_dropouts(model, lora_dropout)
    model.train()
    resident = {t.untyped_storage()._cdata for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in resident:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    ids = torch.zeros((micro_batch, seq_len), dtype=torch.long, device="meta")
    extra = 0
    with _FlashAttentionOnMeta(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if sequence_logps:  # the preference loop: every position's log-probability of its target
            logits = model(input_ids=ids).logits[:, :-1].float()
            targets = torch.zeros(logits.shape[:-1], dtype=torch.long, device="meta")
            (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)).sum()
        elif kept_positions is None:  # Hugging Face's loss: logits at every position
            model(input_ids=ids, labels=ids)
        elif apart:  # decoder, then the fused chunked head: it saves only d loss / d h per pair
            model.get_base_model().model(input_ids=ids)
            rows = micro_batch * kept_positions
            extra = rows * int(config.get_text_config().hidden_size) * torch.finfo(dtype).bits // 8 \
                + micro_batch * seq_len  # + the boolean (row, position) selection
        else:  # iceburg's loop (training/trainer.py): logits only at supervised positions, fp32 CE
            keep = torch.arange(kept_positions, device="meta")
            logits = model(input_ids=ids, logits_to_keep=keep).logits
            targets = torch.zeros(micro_batch * kept_positions, dtype=torch.long, device="meta")
            torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets,
                                              reduction="none").sum()
    return sum(seen.values()) + extra


_PROBES: dict[tuple, tuple[int, int]] = {}


def activation_probe(shape: ModelShape, dtype: torch.dtype, micro_batch: int, seq_len: int,
                     lora_r: int, targets: list[str], lora_dropout: float = 0.05,
                     trust_remote_code: bool = False, kept_positions: int | None = None,
                     cpu_loop: bool = False, head_apart: bool = True,
                     sequence_logps: bool = False) -> tuple[int, int]:
    """Bytes autograd saves for backward: (per decoder layer, outside the layers).

    Measured on copies of the model cut to one and two layers: the difference is one layer, the
    rest is the embedding output, final norm and the loss (log-softmax over the vocabulary).
    Assumes the layers are alike, which holds for the Llama/Qwen/Mistral/Phi/GPT-2 families.
    `kept_positions`: run iceburg's loss (logits at that many positions per row) instead of HF's;
    `cpu_loop`: the trainer's CPU loop (boolean dropout masks, and with `head_apart` the chunked head
    for head-apart models); `sequence_logps`: the preference loop's loss (see _saved_bytes).
    """
    key = (shape.config.to_json_string(use_diff=False), dtype, micro_batch, seq_len, lora_r,
           tuple(sorted(targets)), float(lora_dropout), kept_positions, cpu_loop, head_apart, sequence_logps)
    if key not in _PROBES:
        _PROBES[key] = _probe_layers(shape.config, lambda cfg: _saved_bytes(
            cfg, dtype, micro_batch, seq_len, lora_r, targets, lora_dropout, trust_remote_code, kept_positions,
            cpu_loop, head_apart, sequence_logps))
    return _PROBES[key]
