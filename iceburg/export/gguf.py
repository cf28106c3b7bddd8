"""GGUF export written by iceburg itself with the `gguf` package (no converter script).

`write_gguf(model_dir, out_path, "q8_0")` turns a Hugging Face folder (safetensors + tokenizer)
into one GGUF file; `export(model_dir, out_dir, ctx)` writes one file per `ctx.quantization`
entry, proves each one in llama.cpp when `ctx.verify` (gguf_verify.py) and reports the figures.

- F32, F16, BF16, Q8_0 and Q4_0 are made in-process with `gguf.quants`; Q4_K_M, Q5_K_M and Q6_K
  by llama.cpp's own quantizer (`llama_cpp.llama_model_quantize`) from an F16/BF16 intermediate,
  because the `gguf` package can only dequantize K-quants.
- Tensors are streamed: header and tensor infos are written from the safetensors headers, then
  each tensor is read, converted and written on its own, so memory holds one tensor at a time
  (bench/export_gguf.py measures the peak).
- What differs per architecture is read from its family record (`iceburg.families.gguf_spec`):
  e.g. Llama-family q/k projections are permuted from Hugging Face's rotate-half RoPE layout to
  the interleaved layout llama.cpp's LLAMA arch expects (the inverse of transformers'
  `modeling_gguf_pytorch_utils.py` Llama processor); Qwen2 uses NEOX RoPE in llama.cpp: no
  permutation; Gemma's own keys are its record's `hparams` hook.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import gguf
import numpy as np

from ..errors import ExportError, IceburgError, MissingDependencyError
from ..families import GgufSpec, gguf_model_types, gguf_spec
from .base import LLAMA_INSTALL, ExportContext, ExportResult, atomic_path, check_free_space
from .gguf_tokenizer import add_tokenizer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

T = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType
# name -> (file type, weight type of 2-D tensors); None = made by llama.cpp's quantizer.
FILE_TYPES: dict[str, tuple[FT, T | None]] = {
    "f32": (FT.ALL_F32, T.F32), "f16": (FT.MOSTLY_F16, T.F16), "bf16": (FT.MOSTLY_BF16, T.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, T.Q8_0), "q4_0": (FT.MOSTLY_Q4_0, T.Q4_0),
    "q4_k_m": (FT.MOSTLY_Q4_K_M, None), "q5_k_m": (FT.MOSTLY_Q5_K_M, None), "q6_k": (FT.MOSTLY_Q6_K, None),
}
# Bytes per weight of each type (GGML_QUANT_SIZES: type_size / block_size; K-quant mixes measured
# on llama.cpp's own quantizer: Q4_K_M ~4.9, Q5_K_M ~5.7, Q6_K 6.56 bits per weight).
_BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                     "q4_k_m": 4.9 / 8, "q5_k_m": 5.7 / 8, "q6_k": 6.56 / 8}


# llama.cpp architecture name -> gguf.MODEL_ARCH. What each Hugging Face `model_type` is written as
# (arch, q/k permutation, (1 + w) norms, RoPE variants, the arch's own keys) is its family's
# `GgufSpec` in the registry (iceburg/families/, as llama.cpp's convert_hf_to_gguf.py maps them).
_ARCH_BY_NAME = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}


def arch_spec(model_type: str | None, path: Path | None = None, architectures: list[str] | None = None) -> GgufSpec:
    """The registry's GGUF spec of `model_type`; IceburgError naming the supported ones otherwise."""
    spec = gguf_spec(model_type)
    if spec is None:
        raise IceburgError(f"gguf: architecture {model_type!r} ({', '.join(architectures or [])}) in {path} "
                           f"is not supported; supported architectures: {', '.join(gguf_model_types())}")
    return spec


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE parameters in either spelling (transformers 5 `rope_parameters`, 4.x `rope_scaling`).

    Models with per-layer-type RoPE (Gemma 3: "full_attention" / "sliding_attention") give the
    global layers' parameters here, as convert_hf_to_gguf.py does (the sliding layers' base: the
    gemma3 record's `hparams` hook)."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return rope.get("full_attention", rope)


def _llama3_rope_factors(config: dict[str, Any]) -> np.ndarray:
    """Llama 3.1's per-frequency RoPE factors, exactly as convert_hf_to_gguf.py LlamaModel writes
    them into `rope_freqs.weight` (llama.cpp divides each frequency by its factor): wavelengths
    shorter than original_context/high_freq_factor keep 1, longer than original/low_freq_factor
    get `factor`, and the band between is interpolated smoothly."""
    import math

    rope = _rope(config)
    base = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi / (1.0 / base ** (i / dim))
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"gguf: {path} is missing; point at a Hugging Face model folder (config.json, *.safetensors, tokenizer)")
    config = json.loads(path.read_text())
    model_type = config.get("model_type")
    allowed = arch_spec(model_type, path, config.get("architectures")).rope_types
    rope_type = _rope(config).get("rope_type", _rope(config).get("type")) or "default"
    if rope_type not in allowed:
        raise ExportError(f"gguf: RoPE scaling {rope_type!r} of {model_type} in {path} is not supported by iceburg's "
                          f"GGUF writer (supported for {model_type}: {', '.join(allowed)}); export to huggingface instead")
    return config


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"gguf: no *.safetensors weights in {model_dir}; save the model with "
                          "save_pretrained(<dir>) (safetensors is the default) before exporting")
    return files


def _tensor_headers(model_dir: Path) -> Iterator[tuple[Path, str, tuple[int, ...]]]:
    from safetensors import safe_open

    for path in _safetensors_files(model_dir):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                yield path, name, tuple(f.get_slice(name).get_shape())


def _permute(w: "torch.Tensor", n_head: int) -> "torch.Tensor":
    """HF rotate-half q/k rows -> llama.cpp interleaved rows (convert_hf_to_gguf.py LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()


def _target_type(gguf_name: str, shape: tuple[int, ...], weight_type: T, is_output: bool) -> T:
    if len(shape) < 2 or weight_type in (T.F32,):
        return T.F32
    block = gguf.GGML_QUANT_SIZES[weight_type][0]
    if shape[-1] % block:
        return T.F16  # row not divisible by the block: llama.cpp's converter also falls back to F16
    if weight_type == T.Q4_0 and is_output:
        return T.Q8_0  # the output projection is the most sensitive tensor; llama-quantize keeps it at Q6_K
    return weight_type


def _convert(data: "torch.Tensor", qtype: T) -> np.ndarray:
    """Convert a tensor in its stored dtype to `qtype`, in row chunks.

    Only ~4M values at a time are widened to float32, so a bf16 embedding of 136M values costs
    its own 272 MB plus the output, not an extra 545 MB float32 copy (bench/export_gguf.py).
    """
    import torch

    if qtype == T.F32:
        return data.to(torch.float32).numpy()
    rows = data.reshape(-1, data.shape[-1])
    out = None
    step = max(1, (1 << 22) // rows.shape[1])
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step].to(torch.float32).numpy()
        part = gguf.quants.quantize(np.ascontiguousarray(chunk), qtype)
        if out is None:
            out = np.empty((rows.shape[0], part.shape[1]), dtype=part.dtype)
        out[start:start + step] = part
    assert out is not None
    return out.reshape(*data.shape[:-1], out.shape[-1])


def _add_hparams(w: gguf.GGUFWriter, config: dict[str, Any], n_vocab: int, file_type: FT) -> None:
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = _rope(config)
    w.add_context_length(config.get("max_position_embeddings", 2048))
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if head_dim != config["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    spec = arch_spec(config["model_type"])
    if spec.hparams is not None:  # the arch's own keys (e.g. iceburg/families/gemma.py)
        spec.hparams(w, config, head_dim)
    if config.get("sliding_window") and spec.sliding_window:
        w.add_sliding_window(int(config["sliding_window"]))
    w.add_vocab_size(n_vocab)
    w.add_file_type(int(file_type))


FINGERPRINT_KEY = "iceburg.source_fingerprint"
_FINGERPRINTS: dict[tuple, str] = {}


def source_fingerprint(model_dir: Path) -> str:
    """sha256 over the folder's config, tokenizer, chat template and weight files (contents).

    Written into every GGUF as `iceburg.source_fingerprint`, so the Ollama exporter reuses a GGUF
    only when it was written from this very model. Cached per (path, size, mtime) in the process:
    hashing runs at ~1 GB/s, once per export run.
    """
    model_dir = Path(model_dir)
    names = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenizer.model"]
    files = [model_dir / n for n in names if (model_dir / n).is_file()] + _safetensors_files(model_dir)
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _FINGERPRINTS:
        import hashlib

        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                while block := fh.read(1 << 24):
                    h.update(block)
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


def read_fingerprint(gguf_path: Path) -> str | None:
    """`iceburg.source_fingerprint` of a GGUF file (None: not written by iceburg, or older)."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(gguf_path))
    value = metadata.get(FINGERPRINT_KEY)
    return value if isinstance(value, str) else None


def converter_for(model_dir: Path, converter: str = "auto") -> str:
    """Which path writes `model_dir`'s GGUF: "iceburg" (this module) or "llama.cpp"
    (export/gguf_convert.py); `auto`: iceburg's writer where the registry has a GgufSpec."""
    from .gguf_convert import choose

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ExportError(f"gguf: {path} is missing; point at a Hugging Face model folder (config.json, *.safetensors, tokenizer)")
    model_type = json.loads(path.read_text()).get("model_type")
    return choose(converter, gguf_spec(model_type) is not None, model_type)


def write_gguf(model_dir: Path, out_path: Path, file_type: str = "f16", *, name: str | None = None,
               converter: str = "auto", intermediate: Path | None = None) -> Path:
    """Write `model_dir` (HF folder) as one GGUF file of `file_type`; returns `out_path`.

    The file appears only when complete (written under a temporary name, then renamed).
    `name` goes into `general.name` (default: the folder's name). `converter`: auto | iceburg |
    llama.cpp (`converter_for`). `intermediate`: for K-quants, a 16-bit GGUF of this very model
    already written (e.g. the export's own F16 file) that llama.cpp's quantizer reads instead of a
    freshly written one (`_reusable_intermediate` decides). No proof runs here: call
    `gguf_verify.verify_gguf` (or `export` with ctx.verify) for that.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if file_type not in FILE_TYPES:
        raise ExportError(f"gguf: unknown quantization {file_type!r}; choose from {', '.join(FILE_TYPES)}")
    ftype, weight_type = FILE_TYPES[file_type]
    if converter_for(model_dir, converter) == "llama.cpp":
        from .gguf_convert import DIRECT_TYPES, convert

        if file_type not in DIRECT_TYPES:
            return _write_k_quant(model_dir, out_path, file_type, name, "llama.cpp", intermediate)
        return convert(model_dir, out_path, file_type, name=name or model_dir.name,
                       fingerprint_key=FINGERPRINT_KEY, fingerprint=source_fingerprint(model_dir))
    if weight_type is None:
        return _write_k_quant(model_dir, out_path, file_type, name, "iceburg", intermediate)
    config = _read_config(model_dir)
    spec = arch_spec(config["model_type"])
    gguf_arch = _ARCH_BY_NAME[spec.arch]
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    tied = bool(config.get("tie_word_embeddings", False))

    headers = list(_tensor_headers(model_dir))
    names = {n for _, n, _ in headers}
    n_vocab = config["vocab_size"]
    tmap = gguf.get_tensor_name_map(gguf_arch, config["num_hidden_layers"])
    plan: list[tuple[Path, str, str, tuple[int, ...], T]] = []
    for path, name, shape in headers:
        if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and tied and "model.embed_tokens.weight" in names):
            continue
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(f"gguf: tensor {name!r} in {path.name} has no GGUF name for {spec.arch}; "
                              "is this a plain causal-LM checkpoint of that architecture?")
        output = gname == "output.weight" or (gname == "token_embd.weight" and (tied or "lm_head.weight" not in names))
        plan.append((path, name, gname, shape, _target_type(gname, shape, weight_type, output)))
    extra: dict[str, np.ndarray] = {}
    if (_rope(config).get("rope_type") or _rope(config).get("type")) == "llama3":
        extra[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = _llama3_rope_factors(config)
    plan += [(None, None, gname, data.shape, T.F32) for gname, data in extra.items()]

    t0 = time.perf_counter()
    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, spec.arch)
        try:
            writer.add_name(name or model_dir.name)
            writer.add_string(FINGERPRINT_KEY, source_fingerprint(model_dir))
            _add_hparams(writer, config, n_vocab, ftype)
            add_tokenizer(writer, model_dir, n_vocab)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            for _, _, gname, shape, qtype in plan:
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                nbytes = int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block) * type_size
                writer.add_tensor_info(gname, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for data, (_, name, gname, shape, qtype) in zip(_stream(plan, spec, n_head, n_head_kv, extra), plan):
                writer.write_tensor_data(_convert(data, qtype))
                del data
        finally:
            writer.close()
    logger.info("gguf %s: %s (%.1f MB, %.1fs)", file_type, out_path, out_path.stat().st_size / 1e6, time.perf_counter() - t0)
    return out_path


def _stream(plan: list[tuple[Any, Any, str, tuple[int, ...], T]], spec: GgufSpec, n_head: int,
            n_head_kv: int, extra: dict[str, np.ndarray]) -> Iterator["torch.Tensor"]:
    """Yield each planned tensor in its stored dtype, one at a time, q/k rows permuted for llama."""
    import torch
    from safetensors import safe_open

    for path, name, gname, _shape, _qtype in plan:
        if path is None:  # a tensor made here (rope_freqs), not read from the checkpoint
            yield torch.from_numpy(extra[gname])
            continue
        # Re-open per tensor: safe_open memory-maps the file and touched pages would otherwise
        # stay resident (counted in RSS) until the whole file has been read.
        with safe_open(path, framework="pt") as f:
            data = f.get_tensor(name)
        if spec.permute_qk and name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            data = _permute(data, n_head)
        elif spec.permute_qk and name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            data = _permute(data, n_head_kv)
        if spec.norm_plus_one and name.endswith("norm.weight"):  # convert_hf_to_gguf.py Gemma2Model
            data = data.to(torch.float32) + 1
        yield data


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise MissingDependencyError("llama-cpp-python (needed for K-quants and for the GGUF proof)", LLAMA_INSTALL) from e
    return llama_cpp


def intermediate_type(model_dir: Path) -> str:
    """The 16-bit type K-quants are made from: BF16 for a bfloat16 checkpoint, else F16."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return "bf16" if config.get("dtype", config.get("torch_dtype")) == "bfloat16" else "f16"


def _reusable_intermediate(model_dir: Path, written: dict[str, Path], file_type: str) -> Path | None:
    """A file this export already wrote (and proved, when verifying) that can be the K-quant's
    intermediate: of `intermediate_type`, carrying this model's fingerprint. The same writer with
    the same name wrote it, so it is the intermediate write_gguf would write again (the converter
    path ran llama.cpp's converter a second time for it: ~7 s on a tiny fixture, 2026-12-06)."""
    path = written.get(intermediate_type(model_dir))
    if FILE_TYPES[file_type][1] is not None or path is None:
        return None
    return path if read_fingerprint(path) == source_fingerprint(model_dir) else None


def _write_k_quant(model_dir: Path, out_path: Path, file_type: str, name: str | None, converter: str = "iceburg",
                   intermediate: Path | None = None) -> Path:
    """K-quants (and Q4_0 on the converter path) through llama.cpp's quantizer, from a 16-bit
    intermediate: `intermediate` when given (left in place), else one written by write_gguf
    through `converter` and deleted afterwards."""
    llama_cpp = _llama_cpp()
    if converter != "llama.cpp":
        _read_config(model_dir)  # an unsupported architecture or RoPE fails before anything is written
    inter_type = intermediate_type(model_dir)
    inter = intermediate or out_path.with_name(f".{out_path.stem}.{inter_type}-intermediate.gguf")
    try:
        if intermediate is None:
            write_gguf(model_dir, inter, inter_type, name=name, converter=converter)
        with atomic_path(out_path) as tmp:
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = int(FILE_TYPES[file_type][0])
            params.nthread = 0  # llama.cpp picks the hardware thread count
            # llama.cpp prints one line per tensor through this logger; keep only its errors
            # unless iceburg itself is logging at DEBUG.
            cpp_logger = logging.getLogger("llama-cpp-python")
            previous = cpp_logger.level
            cpp_logger.setLevel(logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.ERROR)
            try:
                rc = llama_cpp.llama_model_quantize(str(inter).encode(), str(tmp).encode(), params)
            finally:
                cpp_logger.setLevel(previous)
            if rc != 0 or not tmp.is_file():
                raise ExportError(f"gguf: llama.cpp failed to quantize {inter.name} to {file_type} (return code {rc})")
    finally:
        if intermediate is None:
            inter.unlink(missing_ok=True)
    return out_path


def estimate_bytes(model_dir: Path, file_type: str) -> int:
    """Upper estimate of the output size from the safetensors headers (plus the K-quant intermediate)."""
    n = sum(int(np.prod(shape)) for _, _, shape in _tensor_headers(Path(model_dir)))
    size = int(n * _BYTES_PER_WEIGHT[file_type]) + (1 << 24)
    return size + (n * 2 if FILE_TYPES[file_type][1] is None else 0)


_CONVERTER_WORDS = {
    "iceburg": "iceburg's in-process writer (export/gguf.py, the family registry's GgufSpec)",
    "llama.cpp": "llama.cpp's convert_hf_to_gguf.py from the pinned llama-cpp-python sdist (export/gguf_convert.py)",
}


def export(model_dir: Path, out_dir: Path, ctx: ExportContext) -> ExportResult:
    """Write `<ctx.name>-<type>.gguf` for each `ctx.quantization` entry; prove each when ctx.verify.

    Types are written in the order given; if one fails (write or proof), the files already
    finished stay (each complete and proven) and the failing one leaves nothing behind.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    types = list(dict.fromkeys(q.lower() for q in (ctx.quantization or ["q8_0"])))
    unknown = [q for q in types if q not in FILE_TYPES]
    if unknown:
        raise ExportError(f"--quantization: unknown GGUF type(s) {', '.join(unknown)}; choose from {', '.join(FILE_TYPES)}")
    converter = converter_for(model_dir, ctx.gguf_converter)
    if converter == "iceburg":
        _read_config(model_dir)  # unsupported architecture fails before anything is written
    else:
        from .gguf_convert import ensure_converter

        ensure_converter()  # a missing converter fails before anything is written, naming the fetch command
    if (ctx.verify or converter == "llama.cpp" or any(FILE_TYPES[q][1] is None for q in types)):
        _llama_cpp()
    check_free_space(out_dir, sum(estimate_bytes(model_dir, q) for q in types), "gguf export")
    files: list[Path] = []
    report: dict[str, Any] = {"files": {}, "converter": converter,
                              "converter_detail": _CONVERTER_WORDS[converter]}
    reference = None
    written: dict[str, Path] = {}  # type -> finished file, a K-quant's intermediate where it fits
    for q in types:
        final = out_dir / f"{ctx.name}-{q}.gguf"
        # Write to a hidden name, prove it, and only then give it its final name: a file that
        # fails the proof never looks like a finished export.
        staged = out_dir / f".{ctx.name}-{q}.unverified.gguf"
        t0 = time.perf_counter()
        try:
            inter = _reusable_intermediate(model_dir, written, q)
            write_gguf(model_dir, staged, q, name=ctx.name, converter=converter, intermediate=inter)
            entry: dict[str, Any] = {"bytes": staged.stat().st_size, "write_s": round(time.perf_counter() - t0, 3),
                                     "converter": converter, "proof": "not run (verify off)"}
            if inter is not None:
                entry["quantized_from"] = inter.name  # the export's own 16-bit file, not written again
            if ctx.verify:
                from .gguf_verify import hf_reference, verify_gguf

                reference = reference or hf_reference(model_dir)
                entry["verify"] = verify_gguf(model_dir, staged, file_type=q, reference=reference)
                failures = entry["verify"]["judgement"]["failures"]
                if failures:
                    raise ExportError(f"gguf {q}: proof failed for {final.name}: {'; '.join(failures)}")
                # the judgement's verdict: "proven" against stated limits, or "measured" (no limit applied)
                entry["proof"] = entry["verify"]["judgement"]["verdict"]
            staged.replace(final)
        finally:
            staged.unlink(missing_ok=True)
        report["files"][final.name] = entry
        files.append(final)
        written[q] = final
    return ExportResult(format="gguf", files=files, report=report)
