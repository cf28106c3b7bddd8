"""Turn a GGUF file into a plain Hugging Face folder that the rest of iceburg trains like any base.

transformers reads GGUF (`from_pretrained(dir, gguf_file=name)`, needs `accelerate` and `gguf`):
config, tokenizer and chat template come from the file's metadata and every tensor is dequantized.
We do that once per file and save the result as safetensors in the iceburg cache, under the file's
sha256, so a second run (or a second process) reuses it. The folder appears in one `os.replace`,
so a crash never leaves a half-written base behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .errors import BaseModelError, CorruptGGUFError, MissingTokenizerError, UnsupportedArchitectureError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# llama.cpp's architecture names that transformers spells differently (transformers'
# modeling_gguf_pytorch_utils.load_gguf_checkpoint applies the same renames).
_ARCH_RENAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                 "minimax-m2": "minimax_m2", "t5encoder": "t5"}


@dataclass
class GgufInfo:
    path: Path
    architecture: str  # general.architecture as llama.cpp writes it
    name: str | None
    tensor_types: list[str]  # distinct ggml types of the tensors, e.g. ["F32", "Q8_0"]
    n_tokens: int  # entries in tokenizer.ggml.tokens (0: no tokenizer in the file)
    n_elements: int  # weights in all tensors (sizes the converted folder)
    has_chat_template: bool
    size: int
    # ggml types transformers' reader cannot dequantize (Q5_0, Q5_1, ...): rewritten first, see
    # `dequantize_foreign_types`.
    foreign_types: list[str] = field(default_factory=list)

    @property
    def has_tokenizer(self) -> bool:
        return self.n_tokens > 0


def supported_gguf_architectures() -> set[str]:
    """Architectures the installed transformers can load from GGUF (both of its loaders)."""
    from transformers.integrations.gguf import GGUF_ARCHS  # the newer loader (qwen35, lfm2, ...)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES  # the legacy one

    return (set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}) | set(GGUF_ARCHS)


def read_gguf_info(path: Path) -> GgufInfo:
    """Parse the header and check the file is whole and of an architecture transformers loads.

    Uses transformers' own GGUF reader, which skips over string arrays without decoding them:
    0.04 s against 6.8 s for `gguf.GGUFReader` on a file with a 152k-token vocabulary (measured
    here on a Qwen2.5-0.5B-shaped Q8_0 file); the vocabulary is decoded later, once, by the load.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise CorruptGGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}; "
                               f"{size} bytes). Pass a .gguf model file, e.g. one written by llama.cpp, "
                               "iceburg's GGUF export or Ollama.")
    try:
        import gguf
        from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata
    except ImportError as exc:
        raise MissingDependencyError("the gguf package (to read GGUF files)", "pip install gguf") from exc
    try:
        metadata, _ = read_gguf_metadata(str(path))
        foreign = _foreign_types(path)
        if foreign:
            return _info_via_gguf_reader(path, size, foreign)
        header = GgufHeader.from_file(str(path))
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise CorruptGGUFError(f"{path}: the GGUF header ends early ({exc}); the file ({size} bytes) is "
                               "truncated or corrupt. Download or export it again (for Ollama: "
                               "`ollama pull <model>`).") from exc
    except ValueError as exc:  # unknown version, tensor type or metadata type
        raise CorruptGGUFError(f"{path}: this GGUF cannot be read: {exc}") from exc
    end = max((header.data_start + t.offset + t.nbytes for t in header.tensors), default=0)
    if end > size or not header.tensors:
        raise CorruptGGUFError(f"{path}: truncated GGUF: its tensors need {end} bytes, the file has "
                               f"{size}{' and no tensors' if not header.tensors else ''}. Download or "
                               "export it again.")
    arch = str(metadata.get("general.architecture"))
    supported = supported_gguf_architectures()
    if arch not in supported and _ARCH_RENAMES.get(arch) not in supported:
        raise UnsupportedArchitectureError(
            f"{path}: GGUF architecture {arch!r} cannot be loaded by the installed transformers "
            f"(it loads: {', '.join(sorted(supported))}). Use a model of a supported architecture, or "
            "its Hugging Face safetensors release.")
    tokens = metadata.get("tokenizer.ggml.tokens", 0)  # the reader gives string arrays as their length
    return GgufInfo(
        path=path, architecture=arch, name=metadata.get("general.name"),
        tensor_types=sorted({gguf.GGMLQuantizationType(t.ggml_type).name for t in header.tensors}),
        n_elements=sum(math.prod(t.shape) for t in header.tensors),
        n_tokens=tokens if isinstance(tokens, int) else len(tokens),
        has_chat_template="tokenizer.chat_template" in metadata, size=size)


def transformers_ggml_types() -> set[int]:
    """ggml type ids transformers 5's GGUF reader reads (F32/F16/BF16 + its dequantizers)."""
    from transformers.integrations.gguf.dequant import GGML_BLOCK

    return set(GGML_BLOCK) | {0, 1, 30}  # F32, F16, BF16 (ggml.h)


def _foreign_types(path: Path) -> list[str]:
    """Names of the ggml types in `path` that transformers' reader cannot read, from a fast scan of
    the tensor infos with the gguf package's own reader (it also knows every type it dequantizes)."""
    import gguf

    known = transformers_ggml_types()
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, struct.error, IndexError, UnicodeDecodeError, OSError):
        return []  # let transformers' reader produce the precise corruption error
    return sorted({t.tensor_type.name for t in reader.tensors if int(t.tensor_type) not in known})


def _info_via_gguf_reader(path: Path, size: int, foreign: list[str]) -> GgufInfo:
    import gguf

    reader = gguf.GGUFReader(str(path))
    undequantizable = [n for n in foreign if gguf.GGMLQuantizationType[n] not in gguf.quants._type_traits]
    if undequantizable:
        raise CorruptGGUFError(f"{path}: holds tensors of ggml type(s) {', '.join(undequantizable)}, which neither "
                               "transformers nor the gguf package can dequantize; use another quantization of the model")

    def value(key: str) -> Any:
        f = reader.get_field(key)
        return f.contents() if f is not None else None

    arch = str(value("general.architecture"))
    supported = supported_gguf_architectures()
    if arch not in supported and _ARCH_RENAMES.get(arch) not in supported:
        raise UnsupportedArchitectureError(f"{path}: GGUF architecture {arch!r} cannot be loaded by the installed "
                                           f"transformers (it loads: {', '.join(sorted(supported))}).")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return GgufInfo(path=path, architecture=arch, name=value("general.name"),
                    tensor_types=sorted({t.tensor_type.name for t in reader.tensors}),
                    n_elements=sum(int(t.n_elements) for t in reader.tensors),
                    n_tokens=len(tokens.data) if tokens is not None else 0,
                    has_chat_template=reader.get_field("tokenizer.chat_template") is not None, size=size,
                    foreign_types=foreign)


def dequantize_foreign_types(src: Path, dst: Path, foreign: list[str]) -> Path:
    """Copy GGUF `src` to `dst` with every tensor of a `foreign` type dequantized by the gguf
    package (F16 for matrices, F32 for vectors, as llama.cpp keeps norms); metadata and all other
    tensors are copied unchanged. Streams one tensor at a time."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.get_field("general.architecture").contents())
    writer = gguf.GGUFWriter(str(dst), arch)
    try:
        for name, f in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
            writer.add_key_value(name, f.contents(), vtype, sub_type=sub)
        plan = []
        for t in reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # numpy order
            if t.tensor_type.name in foreign:
                qtype = gguf.GGMLQuantizationType.F16 if len(shape) > 1 else gguf.GGMLQuantizationType.F32
                nbytes = int(np.prod(shape)) * (2 if len(shape) > 1 else 4)
            else:
                qtype, nbytes = t.tensor_type, int(t.n_bytes)
            writer.add_tensor_info(t.name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
            plan.append((t, qtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, qtype in plan:
            if t.tensor_type.name in foreign:
                values = gguf.quants.dequantize(t.data, t.tensor_type)
                writer.write_tensor_data(values.astype(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32))
            else:
                writer.write_tensor_data(t.data)
    finally:
        writer.close()
    return dst


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def storage_dtype(tensor_types: list[str]) -> str:
    """dtype to keep the dequantized weights in: exact for F32/F16/BF16 files.

    Quantized blocks are fp16 scales times small integers; fp16 keeps them to 2^-11 relative
    error, far below the quantization step itself (Q8_0: 1/127 of the block maximum), and halves
    the disk and memory of fp32. A non-finite value after the cast is checked for in `convert_gguf`.
    """
    weights = set(tensor_types) - {"F32"}  # 1-D norms stay F32 in every file type
    if not weights:
        return "float32"
    if weights == {"BF16"}:
        return "bfloat16"
    return "float16"


def convert_gguf(info: GgufInfo, sha256: str, cache_root: Path, *, trust_remote_code: bool = False) -> Path:
    """Return the cached HF folder for this GGUF, converting it (once, atomically) when needed."""
    final = Path(cache_root) / "gguf" / sha256
    if (final / "config.json").is_file():
        logger.info("GGUF %s already converted: %s", info.path, final)
        return final
    if not info.has_tokenizer:
        raise MissingTokenizerError(
            f"{info.path}: the GGUF has no tokenizer (no tokenizer.ggml.tokens). Use a GGUF that "
            "embeds its tokenizer (llama.cpp's converter, iceburg's GGUF export and Ollama models do).")
    final.parent.mkdir(parents=True, exist_ok=True)
    dtype = storage_dtype(info.tensor_types)
    needed = info.n_elements * (4 if dtype == "float32" else 2)
    free = shutil.disk_usage(final.parent).free
    if free < needed * 1.1:  # 10% headroom for the tokenizer and filesystem overhead
        raise BaseModelError(f"{info.path}: converting it needs about {needed / 2**30:.2f} GiB ({dtype} "
                             f"safetensors) in {final.parent}, only {free / 2**30:.2f} GiB free; free some "
                             "space or point ICEBURG_CACHE at a larger disk.")
    logger.info("converting GGUF %s (%s, %s) to safetensors (%s) in %s", info.path, info.architecture,
                "/".join(info.tensor_types), dtype, final)
    tmp = final.with_name(f".{sha256}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dense_folder(info, tmp, dtype, trust_remote_code)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a concurrent conversion that finished first
                raise
    except NotImplementedError as exc:  # e.g. a name/architecture pair transformers' GGUF maps lack
        raise UnsupportedArchitectureError(f"{info.path}: transformers cannot load this GGUF "
                                           f"({info.architecture}, named {info.name!r}): {exc}") from exc
    except (ValueError, KeyError, IndexError) as exc:
        raise CorruptGGUFError(f"{info.path}: transformers could not load this GGUF "
                               f"({type(exc).__name__}: {exc}). Re-export or re-download it.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_dense_folder(info: GgufInfo, out: Path, dtype: str, trust_remote_code: bool) -> None:
    """Load the GGUF with transformers (dequantized) and save model + tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from ..progress import StepBar

    src_dir, name = str(info.path.parent), info.path.name
    if info.foreign_types:  # e.g. Q5_0 tensors in a Q4_K_M file: dequantized by the gguf package first
        logger.info("GGUF %s holds %s tensors: dequantizing them with the gguf package first", info.path,
                    "/".join(info.foreign_types))
        out.mkdir(parents=True, exist_ok=True)
        dequantize_foreign_types(info.path, out / "dequantized.gguf", info.foreign_types)
        src_dir, name = str(out), "dequantized.gguf"

    def load(dtype: str) -> Any:
        # dequantize=True: plain dense weights, never the packed kernels fetched from the Hub.
        return AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=name, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            quantization_config=GgufConfig(dequantize=True))

    started = time.perf_counter()
    s = StepBar(f"building base from {info.path.name}",
                ["load + dequantize", "save weights", "save tokenizer", "match llama.cpp tokenizer"])
    with s:
        s.step("load + dequantize")
        model = load(dtype)
        if dtype == "float16" and any(_has_fp16_overflow(p) for p in model.parameters()):
            logger.warning("GGUF %s overflows float16 once dequantized; loading it as bfloat16", info.path)
            del model  # free it before the second load
            model = load("bfloat16")
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name, trust_remote_code=trust_remote_code)
        logger.info("GGUF %s loaded and dequantized in %.1fs", info.path, time.perf_counter() - started)
        (out / "dequantized.gguf").unlink(missing_ok=True)
        s.step("save weights")
        model.save_pretrained(out)
        s.step("save tokenizer")
        tokenizer.save_pretrained(out)
        _drop_foreign_tokens(out, info.n_tokens)
        s.step("match llama.cpp tokenizer")
        changed = match_llama_cpp(out, info.path)
        if changed:
            logger.info("GGUF %s: tokenizer adjusted to tokenize as llama.cpp does: %s", info.path,
                        "; ".join(changed))


# llama.cpp pre-tokenizers that take a whole pre-token from the vocabulary before applying any
# BPE merge (src/llama-vocab.cpp: `ignore_merges = true` for LLAMA_VOCAB_PRE_TYPE_LLAMA3); Llama 3's
# own tokenizer.json says `"ignore_merges": true`, but transformers' GGUF conversion leaves it off,
# so " Việt" became 3 tokens instead of llama.cpp's one (llama-bpe .inp/.out: 45/46 -> 46/46).
IGNORE_MERGES_PRE = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}


def match_llama_cpp_bpe(folder: Path, pre: str | None) -> bool:
    """Set `ignore_merges` in `folder/tokenizer.json` when llama.cpp's pre-tokenizer `pre` uses it;
    returns True when the file was changed."""
    path = Path(folder) / "tokenizer.json"
    if pre not in IGNORE_MERGES_PRE or not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("ignore_merges"):
        return False
    model["ignore_merges"] = True
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return True


def match_llama_cpp_spm(folder: Path) -> bool:
    """SentencePiece-style tokenizers: prepend "▁" to every text piece as llama.cpp does
    (`add_space_prefix`), i.e. Llama 2's own normalizer (Prepend("▁") + Replace(" ", "▁")).

    transformers' GGUF conversion writes a Metaspace pre-tokenizer with prepend_scheme "first",
    which skips the prefix when the text already starts with a space: " " became [29871] where
    llama.cpp gives [259] (llama-spm .inp/.out 31/46 before, 46/46 after). Returns True if changed.
    """
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    pre = data.get("pre_tokenizer") or {}
    model = data.get("model") or {}
    if not (model.get("type") == "BPE" and model.get("byte_fallback") and pre.get("type") == "Metaspace"
            and pre.get("prepend_scheme") in ("first", "always") and not pre.get("split", True)):
        return False
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    data["pre_tokenizer"] = None
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return True


def gguf_tokenizer_pre(path: Path) -> str | None:
    """`tokenizer.ggml.pre` of a GGUF file (fast reader), or None."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(path))
    pre = metadata.get("tokenizer.ggml.pre")
    return pre if isinstance(pre, str) else None


def match_llama_cpp(folder: Path, gguf_path: Path) -> list[str]:
    """Apply the tokenizer fix-ups above that the GGUF's tokenizer calls for; returns what changed."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(gguf_path))
    changed = []
    if match_llama_cpp_bpe(folder, metadata.get("tokenizer.ggml.pre")):
        changed.append("ignore_merges (llama.cpp %s pre-tokenizer)" % metadata.get("tokenizer.ggml.pre"))
    if metadata.get("tokenizer.ggml.model") == "llama" and metadata.get("tokenizer.ggml.add_space_prefix", True) \
            and match_llama_cpp_spm(folder):
        changed.append("space prefix on every piece (llama.cpp add_space_prefix)")
    return changed


def _has_fp16_overflow(param: Any) -> bool:
    """Whether a float16 tensor holds inf/nan: exponent bits all set (2x faster than isfinite on CPU)."""
    import torch

    return bool(((param.detach().view(torch.int16) & 0x7C00) == 0x7C00).any())


def _drop_foreign_tokens(folder: Path, n_tokens: int) -> None:
    """Remove added tokens the GGUF does not have (ids >= its token count).

    transformers builds byte-level GGUF tokenizers on the GPT-2 tokenizer class, whose default
    `<|endoftext|>` gets appended when the vocabulary lacks it (measured on a Llama-3-style
    vocabulary: 400 tokens in the file, 401 after loading). Its id is outside the embedding
    matrix, so text containing it would crash training; the converted base keeps the file's tokens.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    added = data.get("added_tokens") or []
    foreign = [t["content"] for t in added if t.get("id", 0) >= n_tokens]
    if not foreign:
        return
    logger.info("dropping token(s) %s added by the GGUF tokenizer loader (not in the file)", foreign)
    data["added_tokens"] = [t for t in added if t.get("id", 0) < n_tokens]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("unk_token", "bos_token", "eos_token", "pad_token"):
            if config.get(key) in foreign:
                config[key] = None
        decoder = config.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < n_tokens}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
