"""The second GGUF path: llama.cpp's own converter (`convert_hf_to_gguf.py`) from the pinned sdist.

iceburg's in-process writer (export/gguf.py) covers the architectures whose family record carries a
proven `GgufSpec`. Every other architecture (Qwen3.5's hybrid linear attention, Gemma 4, gpt-oss's
MoE, SmolLM3's NoPE layers, ...) goes through the field's maintained converter, taken from exactly
the llama.cpp that proves the files: llama-cpp-python 0.3.36's sdist vendors
`vendor/llama.cpp/convert_hf_to_gguf.py`, its `conversion/` package (one module per lineage) and
its own `gguf-py`. `ensure_converter()` extracts those once into
`$ICEBURG_CACHE/llama-cpp-converter/<version>/`; `convert()` runs the script as a subprocess of the
venv's python on the merged HF folder, with the sdist's gguf-py first on PYTHONPATH: the installed
`gguf` 0.19.0 carries the same version string but other constants (153 vs 126 architectures,
checked 2026-12-05), and the converter needs its own. The same subprocess adds
`iceburg.source_fingerprint` to the converter's own GGUFWriter as it is built (one key among the
converter's, written in the same pass), so the Ollama exporter's reuse rule holds for both paths.
(Until 2026-12-06 the file was re-read with gguf-py's GGUFReader and copied with the key added:
the reader parses a 128k-token vocabulary field by field, seconds per file, and the copy rewrote
every tensor.) K-quants and Q4_0 are then made by
llama.cpp's quantizer from the F16/BF16 file, as on the in-process path.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import ExportError, IceburgError

logger = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the sdist the Makefile's `llama` extra builds (STACK.md)
CONVERTERS = ("auto", "iceburg", "llama.cpp")
# file types the converter writes itself (its --outtype choices); the rest come from llama.cpp's quantizer
DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0")
_PREFIX = "vendor/llama.cpp/"
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")
_DONE = ".complete"


def converter_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    root = Path(os.environ.get("ICEBURG_CACHE", Path.home() / ".cache" / "iceburg"))
    return root / "llama-cpp-converter" / version


def fetch_command(version: str = LLAMA_CPP_PYTHON_VERSION) -> str:
    return f"{Path(sys.executable).name} -m iceburg.export.gguf_convert --fetch {version}"


def _download_sdist(version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
           "-d", str(dest), f"llama-cpp-python=={version}"]
    logger.info("fetching llama.cpp's converter: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sdists = list(dest.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not sdists:
        raise IceburgError(f"could not download llama-cpp-python=={version}'s source distribution "
                           f"(pip exit {proc.returncode}): {proc.stderr.strip()[-500:]}; run by hand: {' '.join(cmd)}")
    return sdists[0]


def extract_converter(sdist: Path, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Extract convert_hf_to_gguf.py, conversion/ and gguf-py/ from a llama-cpp-python sdist."""
    final = converter_dir(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        staged = Path(tmp) / "converter"
        with tarfile.open(sdist) as tar:
            for member in tar:
                rel = member.name.partition("/")[2]
                if not (member.isfile() and rel.startswith(_PREFIX)):
                    continue
                rel = rel[len(_PREFIX):]
                if not rel.startswith(_MEMBERS):
                    continue
                dest = staged / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
        if not (staged / "convert_hf_to_gguf.py").is_file():
            raise IceburgError(f"{sdist.name} holds no vendor/llama.cpp/convert_hf_to_gguf.py")
        (staged / _DONE).write_text(version)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staged, final)
    return final


def ensure_converter(version: str = LLAMA_CPP_PYTHON_VERSION, *, download: bool = False) -> Path:
    """The extracted converter folder (cached). Without `download`, a missing one is an error that
    names the command fetching it (the export never reaches the network on its own)."""
    final = converter_dir(version)
    if (final / _DONE).is_file():
        return final
    if not download:
        raise ExportError(f"gguf: llama.cpp's converter (llama-cpp-python=={version} sdist) is not in {final}; "
                          f"fetch it once with: {fetch_command(version)}  (or pass --gguf-converter iceburg "
                          "for an architecture iceburg's own writer supports)")
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    # one fetcher at a time (parallel test workers share the cache); the others wait and reuse it
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if (final / _DONE).is_file():
            return final
        with tempfile.TemporaryDirectory() as tmp:
            return extract_converter(_download_sdist(version, Path(tmp)), version)


# Run in the subprocess: the converter's main() on argv, its GGUFWriter (the sdist's gguf-py)
# given the fingerprint key as it is constructed, so the file is written once, key included.
_DRIVER = """
import sys, os
out, key, value, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
import gguf
_init = gguf.GGUFWriter.__init__
def _init_with_key(self, *a, **k):
    _init(self, *a, **k)
    self.add_string(key, value)
gguf.GGUFWriter.__init__ = _init_with_key
import convert_hf_to_gguf as c
from conversion import ModelBase
# No multi-token-prediction layers (what --no-mtp does, for every class: the flag itself is refused
# by classes without MTP support, e.g. SmolLM3): iceburg's LoRA never trains an MTP head
# (transformers drops `mtp.*` on load, so a merged folder has none), and the Qwen3.5 class
# otherwise asserts on a config without mtp_num_hidden_layers (conversion/qwen.py, 0.3.36).
ModelBase.no_mtp = True
sys.argv = ["convert_hf_to_gguf.py", *argv, "--outfile", out]
c.main()
"""


# transformers 5 saves every layer kind under its new name ("linear_attention", "full_attention";
# configuration_utils._LEGACY_LAYER_TYPE_REMAP); the 0.3.36 converter still reads the legacy names
# for these model_types (conversion/granite.py GraniteHybridModel.get_attn_layers counts only
# "attention" layers: handed the new names it writes every layer as Mamba-2, head_count_kv all 0).
_LEGACY_LAYER_TYPES = {"granitemoehybrid": {"linear_attention": "mamba", "full_attention": "attention"}}


def converter_view(model_dir: Path, staging: Path) -> Path:
    """The folder the converter reads: `model_dir` itself, or (where its config.json carries layer
    kinds the converter reads under their legacy names) a folder in `staging` of links to its files
    with a config.json that names them so. The weights are never copied."""
    import json

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    remap = _LEGACY_LAYER_TYPES.get(config.get("model_type", ""))
    kinds = config.get("layer_types")
    if not remap or not kinds or not set(kinds) & set(remap):
        return model_dir
    view = staging / "converter-view"
    view.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.name != "config.json":
            (view / item.name).symlink_to(item.resolve())
    config["layer_types"] = [remap.get(k, k) for k in kinds]
    (view / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return view


def convert(model_dir: Path, out_path: Path, outtype: str, *, name: str, fingerprint_key: str,
            fingerprint: str) -> Path:
    """`model_dir` (merged HF folder) -> `out_path` through llama.cpp's converter, `outtype` one of
    DIRECT_TYPES; the file appears only when complete."""
    if outtype not in DIRECT_TYPES:
        raise ExportError(f"gguf: llama.cpp's converter writes {', '.join(DIRECT_TYPES)}, not {outtype!r}")
    conv = ensure_converter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(conv / "gguf-py"), str(conv)]),
           "NO_LOCAL_GGUF": "1"}
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.partial")
    t0 = time.perf_counter()
    staging = tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.view.")
    try:
        source = converter_view(Path(model_dir), Path(staging.name))
        cmd = [sys.executable, "-c", _DRIVER, str(tmp), fingerprint_key, fingerprint, str(source),
               "--outtype", outtype, "--model-name", name]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=conv)
        if proc.returncode != 0 or not tmp.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise ExportError(f"gguf: llama.cpp's convert_hf_to_gguf.py ({conv}) failed on {model_dir} "
                              f"(exit {proc.returncode}):\n{tail}")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
        staging.cleanup()
    logger.info("gguf %s via llama.cpp's converter: %s (%.1f MB, %.1fs)", outtype, out_path,
                out_path.stat().st_size / 1e6, time.perf_counter() - t0)
    return out_path


def choose(converter: str, has_spec: bool, model_type: str | None) -> str:
    """Which path writes the file: "iceburg" or "llama.cpp" (`auto`: iceburg's writer where the
    registry holds a GgufSpec for the model_type, else llama.cpp's converter)."""
    if converter not in CONVERTERS:
        raise ExportError(f"--gguf-converter {converter!r}: choose from {', '.join(CONVERTERS)}")
    if converter == "auto":
        return "iceburg" if has_spec else "llama.cpp"
    if converter == "iceburg" and not has_spec:
        raise ExportError(f"--gguf-converter iceburg: iceburg's writer has no GgufSpec for {model_type!r}; "
                          "use --gguf-converter auto or llama.cpp")
    return converter


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m iceburg.export.gguf_convert",
                                     description="Fetch llama.cpp's converter from the pinned llama-cpp-python sdist")
    parser.add_argument("--fetch", nargs="?", const=LLAMA_CPP_PYTHON_VERSION, default=LLAMA_CPP_PYTHON_VERSION)
    args = parser.parse_args(argv)
    print(ensure_converter(args.fetch, download=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
