"""ONNX export with a key/value cache, proven against the PyTorch model in onnxruntime.

Writes the folder `<out_dir>/<name>-onnx/` (renamed into place only after the proof passed):
`model.onnx` (+ `model.onnx.data`, external weights), optionally `model.int8.onnx` (dynamic int8
quantization of the weights, `onnxruntime.quantization.quantize_dynamic`), the tokenizer and
config files, and `onnx_export.json` with the measured figures.

Graph (`torch.onnx.export`, dynamo exporter; optimum-onnx does not support transformers 5, see
STACK.md): inputs `input_ids [batch, sequence]`, `attention_mask [batch, past_sequence +
sequence]`, `past_key_values.{i}.key|value [batch, kv_heads, past_sequence, head_dim]`; outputs
`logits [batch, sequence, vocab]` and `present.{i}.key|value`. Every axis named is dynamic. A
first call passes empty (length 0) past tensors, so the same graph does prefill and decoding.
Positions are counted from the start of the cache (transformers' default without `position_ids`),
so batches must be right-padded; left-padded batched generation would need a `position_ids` input.

Proof (ctx.verify): max |logit difference| between onnxruntime and torch (fp32) on fixed prompts,
one by one and as one right-padded batch (padded positions excluded), must be <= 1e-4 (issue 6;
measured ~2e-7 on small Llama models); greedy decoding through the ONNX cache must give the same
tokens as `model.generate`. The int8 file is measured (max difference, argmax agreement), not
held to the fp32 limit: int8 weights change logits by design.

Refused by model_type before any attempt (`REFUSED`, issue 32): Qwen3.5, Granite 4, gpt-oss and
Gemma 4, each with the error its fixture's export raised; they export as GGUF.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..logs import is_quiet, requiet
from .base import PROVEN, ExportContext, ExporterSpec, ExportResult, atomic_path, check_free_space, not_verified

logger = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-4  # issue 6: "onnxruntime logits within 1e-4 of torch"
# What the proof applies, recorded in every report beside the measured figures.
LIMITS = {
    "max_abs_logit_diff": {"limit": MAX_ABS_DIFF, "applies_to": "model.onnx: single prompts, padded batch, cached steps",
                           "source": "issue 6; measured 2.7e-7..8e-7 on the fixture families, 7.8e-5 on SmolLM2-135M, AMD EPYC "
                                     "(docs/families.md)"},
    "greedy_tokens": {"limit": "equal to model.generate", "applies_to": "model.onnx through its KV cache",
                      "source": "same logits to 1e-4 cannot flip a greedy choice except at exact ties"},
    "int8": {"limit": None, "applies_to": "model.int8.onnx",
             "source": "measured only: int8 weights change logits by design (no published limit for dynamic int8)"},
}
GREEDY_TOKENS = 8
PROMPTS = [
    "The evidence for this claim is",
    "Water boils at a lower temperature on a mountain because",
    "Summarise the open questions in one sentence:",
]
# Architectures refused by name before any export attempt (issue 32), each with what the export
# raised on the family's fixture (2026-12-06, torch.onnx dynamo, transformers 5.24; measured one by
# one, tests/families/test_new_families_onnx.py, docs/export_ollama_onnx.md "New families"). GGUF
# (--formats gguf / ollama, llama.cpp's converter) exports and proves all of them.
_HYBRID = ("the graph's cache inputs are keys/values only: its Gated DeltaNet / Mamba-2 layers keep a "
           "recurrent and convolution state, which has no input here (measured: AttributeError "
           "'LinearAttentionLayer' object has no attribute 'keys')")
REFUSED = {
    "qwen3_5_text": ("Qwen3.5 (hybrid Gated DeltaNet linear attention + softmax attention)", _HYBRID),
    "granitemoehybrid": ("Granite 4 (hybrid Mamba-2 + attention, MoE)", _HYBRID),
    "gpt_oss": ("gpt-oss (MoE experts, attention sinks)",
                "torch.onnx has no ONNX function for the MoE experts' transformers.grouped_mm_fallback "
                "(measured: DispatchError, translation step 3/3)"),
    "gemma4_text": ("Gemma 4 (sliding + global attention, global heads wider than local)",
                    "the graph gives every layer's past the same head width, Gemma 4's global layers are "
                    "wider (measured: torch.export RuntimeError 'Sizes of tensors must match ... Expected "
                    "16 in dimension 3 but got 32')"),
}
REFUSED["qwen3_5"] = REFUSED["qwen3_5_text"]  # the released checkpoints' multimodal wrapper
REFUSED["gemma4"] = REFUSED["gemma4_text"]


def check_supported(model_dir: Path) -> None:
    """ExportError naming the architecture, the measured reason and GGUF, for a refused model_type."""
    config = Path(model_dir) / "config.json"
    model_type = json.loads(config.read_text()).get("model_type", "") if config.exists() else ""
    if model_type in REFUSED:
        arch, why = REFUSED[model_type]
        raise ExportError(f"onnx: {arch}, model_type {model_type!r} in {config}, is not exported to ONNX: {why}. "
                          "Export it as GGUF instead (--formats gguf, or ollama), which is proven for it; "
                          "nothing was written")


_COPY = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "chat_template.jinja", "tokenizer.model")


def _wrapper(model):
    import torch
    from transformers import DynamicCache

    n_layers = model.config.num_hidden_layers

    class CausalLMWithCache(torch.nn.Module):
        """forward(input_ids, attention_mask, *past) -> (logits, *present), flat tensors for ONNX."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache(config=self.model.config)
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True)
            present = []
            for layer in out.cache.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return CausalLMWithCache().eval()


def _kv_shape(model) -> tuple[int, int]:
    import torch

    with torch.no_grad():
        cache = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True).cache
    k = cache.layers[0].keys
    return int(k.shape[1]), int(k.shape[3])


def export_graph(model, path: Path) -> list[str]:
    """Export `model` (eval, fp32) to `path`; returns the past input names in order."""
    import torch
    from torch.export import Dim

    n_layers = model.config.num_hidden_layers
    kv_heads, head_dim = _kv_shape(model)
    past_names = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    # Example sizes > 1 on every dynamic axis: torch.export specialises axes of size 0 or 1.
    batch, seq, past_len = 2, 4, 3
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    mask = torch.ones(batch, past_len + seq, dtype=torch.long)
    past = tuple(torch.zeros(batch, kv_heads, past_len, head_dim) for _ in past_names)
    b, s, p, t = Dim("batch"), Dim("sequence"), Dim("past_sequence"), Dim("total_sequence")
    dynamic = {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: t}, "past": tuple({0: b, 2: p} for _ in past_names)}
    requiet()  # torch's import reset its loggers' levels (logs.requiet)
    # verbose=False: the dynamo exporter otherwise prints its "[torch.onnx] ..." step lines on
    # stdout, past any logger; `-v` (not quiet) keeps them for bug reports
    torch.onnx.export(_wrapper(model), (ids, mask, *past), str(path), dynamo=True, dynamic_shapes=dynamic,
                      verbose=not is_quiet(), input_names=["input_ids", "attention_mask", *past_names],
                      output_names=["logits", *[n.replace("past_key_values", "present") for n in past_names]])
    return past_names


def _session(path: Path):
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # same thread budget as torch (pinned in tests)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(sess, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray] | None = None) -> list[np.ndarray]:
    names = [i.name for i in sess.get_inputs()][2:]
    if past is None:
        kv = sess.get_inputs()[2].shape  # [batch, kv_heads, past, head_dim]
        past = [np.zeros((ids.shape[0], kv[1], 0, kv[3]), np.float32) for _ in names]
    return sess.run(None, {"input_ids": ids, "attention_mask": mask, **dict(zip(names, past))})


def _batch(tok, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids and mask (no tokenizer padding setting needed)."""
    seqs = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, seqs))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = np.full((len(seqs), width), pad, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return ids, mask


def _torch_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def measure(model, tok, sess, prompts: list[str] = PROMPTS) -> dict:
    """onnxruntime vs torch: per-prompt and padded-batch max |diff|, argmax agreement, greedy tokens."""
    single = []
    for p in prompts:
        ids, mask = _batch(tok, [p])
        single.append(float(np.abs(_run(sess, ids, mask)[0] - _torch_logits(model, ids, mask)).max()))
    ids, mask = _batch(tok, prompts)
    ort_logits, ref = _run(sess, ids, mask)[0], _torch_logits(model, ids, mask)
    keep = mask.astype(bool)
    batched = float(np.abs(ort_logits - ref)[keep].max())
    agree = float((ort_logits.argmax(-1) == ref.argmax(-1))[keep].mean())
    return {"max_abs_diff_single": max(single), "max_abs_diff_batched_padded": batched,
            "argmax_agreement": agree, "positions_compared": int(keep.sum()), "prompts": len(prompts),
            "padded_positions_excluded": int((~keep).sum())}


def greedy_check(model, tok, sess, prompt: str = PROMPTS[0], n: int = GREEDY_TOKENS) -> dict:
    """Greedy decoding through the ONNX KV cache vs `model.generate`, and each cached step's logits
    vs torch's logits for the whole sequence so far (no cache): proves the cache path numerically
    even when a small model repeats one token."""
    import torch

    ids, mask = _batch(tok, [prompt])
    past, feed, got, step_diff = None, ids, [], 0.0
    for _ in range(n):
        seq = np.concatenate([ids, np.array([got], np.int64).reshape(1, -1)], axis=1)
        out = _run(sess, feed, np.ones((1, seq.shape[1]), np.int64), past)
        ref = _torch_logits(model, seq, np.ones_like(seq))[0, -1]
        step_diff = max(step_diff, float(np.abs(out[0][0, -1] - ref).max()))
        nxt = int(out[0][0, -1].argmax())
        got.append(nxt)
        past, feed = out[1:], np.array([[nxt]], np.int64)
    with torch.no_grad():
        gen = model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id or 0)
    ref_tokens = gen[0, ids.shape[1]:].tolist()
    return {"tokens": n, "onnx": got, "torch": ref_tokens, "equal": got == ref_tokens,
            "max_abs_diff_cached_steps": step_diff}


def quantize_int8(src: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8,
                     use_external_data_format=src.with_name(src.name + ".data").exists())


def _weights_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def export(model_dir: Path, out_dir: Path, ctx: ExportContext, *, int8: bool | None = None) -> ExportResult:
    """Export `model_dir` to `<out_dir>/<ctx.name>-onnx/`; int8 defaults to `ctx.onnx_int8` if present."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_supported(model_dir)
    int8 = bool(getattr(ctx, "onnx_int8", False)) if int8 is None else int8
    # fp32 graph (2x a bf16 checkpoint) + int8 copy (~1/4 of fp32) + the export's working copy.
    check_free_space(out_dir, _weights_bytes(model_dir) * (4 if int8 else 3), "onnx export")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    folder = out_dir / f"{ctx.name}-onnx"
    report: dict = {"kv_cache": True, "threads": torch.get_num_threads(), "limit": MAX_ABS_DIFF, "limits": LIMITS}
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        t0 = time.perf_counter()
        export_graph(model, tmp / "model.onnx")
        report["export_s"] = round(time.perf_counter() - t0, 2)
        sess = _session(tmp / "model.onnx")
        if ctx.verify:
            t0 = time.perf_counter()
            report["fp32"] = measure(model, tok, sess)
            report["greedy"] = greedy_check(model, tok, sess)
            report["verify_s"] = round(time.perf_counter() - t0, 2)
            worst = max(report["fp32"]["max_abs_diff_single"], report["fp32"]["max_abs_diff_batched_padded"])
            worst = max(worst, report["greedy"]["max_abs_diff_cached_steps"])
            if worst > MAX_ABS_DIFF or not report["greedy"]["equal"]:
                raise ExportError(f"onnx: onnxruntime disagrees with torch (max |logit diff| {worst:.3g} > "
                                  f"{MAX_ABS_DIFF} or greedy tokens differ: {report['greedy']}); nothing was written")
        if int8:
            t0 = time.perf_counter()
            quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
            report["int8_s"] = round(time.perf_counter() - t0, 2)
            if ctx.verify:
                report["int8"] = measure(model, tok, _session(tmp / "model.int8.onnx"))
        for name in _COPY:
            if (model_dir / name).exists():
                shutil.copy2(model_dir / name, tmp / name)
        report["files"] = {f.name: f.stat().st_size for f in sorted(tmp.iterdir())}
        (tmp / "onnx_export.json").write_text(json.dumps(report, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
    logger.info("onnx: %s (%s)", folder, report.get("fp32", "not verified"))
    return ExportResult("onnx", sorted(folder.iterdir()), report)


def _status(report: dict) -> str:
    if "fp32" not in report:
        return not_verified("verification turned off")
    # export() raises before writing when a limit is broken, so a written, verified graph is proven
    return PROVEN + ("; model.int8.onnx measured (no limit)" if "int8" in report else "")


def _headline(report: dict) -> str:
    if "fp32" not in report:
        return ""
    fp = report["fp32"]
    worst = max(fp["max_abs_diff_single"], fp["max_abs_diff_batched_padded"])
    text = f"onnxruntime max |logit diff| {worst:.3g} (limit {MAX_ABS_DIFF:g}), greedy equal"
    if "int8" in report:
        text += f"; int8 argmax {report['int8']['argmax_agreement']:.1%} (measured)"
    return text


SPEC = ExporterSpec(name="onnx", order=3, module="iceburg.export.onnx", options=("onnx_int8",),
                    headline=_headline, status=_status,
                    summary="ONNX graph with a KV cache, proven against torch in onnxruntime (optional int8 copy)")
