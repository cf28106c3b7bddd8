"""Where does Q8_0's logit error come from? (issue 11: real SmolLM2-135M, max |dlogit| 1.97)

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/gguf_q8_0_error.py [--model smollm2-135m]

On one model and the GGUF proof's fixed prompts, compares with the HF fp32 logits:
  1. llama.cpp on iceburg's Q8_0 file and on llama.cpp's own Q8_0 (llama_model_quantize from an
     F32 GGUF), with the tensors' bytes compared;
  2. torch with Q8_0-rounded weights only (the file's weights, exact arithmetic);
  3. torch with Q8_0 weights AND every linear layer's input rounded to Q8_0 blocks, which is what
     llama.cpp's CPU matmul does (ggml: vec_dot_type of Q8_0 is Q8_0, activations are quantized
     per 32 values with scale max|x|/127 before the integer dot product);
  4. llama.cpp on mixed files: F16 everywhere except one tensor group in Q8_0;
  5. the same on random weights of the same shapes, and on those random weights after a Q4_1
     round trip (the SmolLM2 base came from a Q4_1 GGUF);
and reports the logit scale (std, top-1 - top-2 gaps) so the error can be read relative to it.
Writes bench/results/gguf_q8_0_error.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine_info  # noqa: E402


def fake_q8_0(x):
    """Round the last dim of `x` to ggml Q8_0 blocks (32 values, scale max|x|/127, fp16 scale)."""
    import torch

    shape = x.shape
    b = x.reshape(-1, shape[-1] // 32, 32).float()
    d = (b.abs().amax(-1, keepdim=True) / 127).half().float()
    q = torch.where(d > 0, torch.round(b / torch.where(d > 0, d, 1)), 0)
    return (q * d).reshape(shape).to(x.dtype)


def torch_logits(model, ids_list, act_q: bool):
    import torch

    handles = []
    if act_q:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                handles.append(m.register_forward_pre_hook(lambda mod, args: (fake_q8_0(args[0]),)))
    try:
        with torch.no_grad():
            return [model(torch.tensor([ids])).logits[0].float().numpy() for ids in ids_list]
    finally:
        for h in handles:
            h.remove()


def compare(ref, got) -> dict:
    diffs = [float(np.abs(a - b).max()) for a, b in zip(ref, got)]
    hit = np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(ref, got)])
    gaps = np.concatenate([np.diff(np.sort(a, -1)[:, -2:], axis=-1)[:, 0] for a in ref])
    dec = gaps > 0.5
    rms = float(np.sqrt(np.mean(np.concatenate([((a - b) ** 2).ravel() for a, b in zip(ref, got)]))))
    kld = np.concatenate([kl_divergence(a, b) for a, b in zip(ref, got)])
    return {"max_abs": max(diffs), "rms": rms, "argmax": float(hit.mean()),
            "argmax_decisive": float(hit[dec].mean()) if dec.any() else 1.0,
            "kld_mean": float(kld.mean()), "kld_max": float(kld.max())}


def kl_divergence(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """KL(ref || got) of the next-token distributions per position, in nats (llama-perplexity's KLD)."""
    lp = ref - ref.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = got - got.max(-1, keepdims=True)
    lq = lq - np.log(np.exp(lq).sum(-1, keepdims=True))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def llama_logits(path: Path, ids_list):
    from iceburg.export.gguf_verify import _llama_logits, _load_llama

    llm = _load_llama(path, max(64, max(len(i) for i in ids_list) + 8))
    try:
        return [_llama_logits(llm, ids) for ids in ids_list]
    finally:
        llm.close()


def quantize_with_llama_cpp(src: Path, dst: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(__import__("gguf").LlamaFileType.MOSTLY_Q8_0)
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) == 0


def tensor_bytes(path: Path) -> dict[str, np.ndarray]:
    import gguf

    return {t.name: np.asarray(t.data).view(np.uint8).ravel().copy() for t in gguf.GGUFReader(path).tensors}


def write_mixed(model_dir: Path, out: Path, q8_groups: set[str]) -> Path:
    """An F16 GGUF whose tensors of `q8_groups` ('embd', 'attn', 'ffn') are Q8_0."""
    import gguf

    from iceburg.export import gguf as g

    orig = g._target_type

    def target(gname, shape, weight_type, is_output):
        if len(shape) < 2:
            return gguf.GGMLQuantizationType.F32
        group = "embd" if gname.startswith(("token_embd", "output")) else "attn" if ".attn_" in gname else "ffn"
        return gguf.GGMLQuantizationType.Q8_0 if group in q8_groups else gguf.GGMLQuantizationType.F16

    g._target_type = target
    try:
        return g.write_gguf(model_dir, out, "f16")
    finally:
        g._target_type = orig


def weight_error_stats(sd) -> dict:
    """Q8_0 rounding error relative to the weights' rms: SmolLM2's own (Q4_1-born) tensors vs
    Gaussian tensors of the same shapes, plain and after a Q4_1 round trip."""
    import gguf

    Q8, Q41 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1

    def rel(w: np.ndarray) -> tuple[float, float]:
        err = gguf.quants.dequantize(gguf.quants.quantize(w, Q8), Q8).reshape(w.shape) - w
        return float(np.sqrt((err ** 2).mean())), float(np.sqrt((w ** 2).mean()))

    rng = np.random.default_rng(0)
    per_tensor, tot = {}, {"real": [0.0, 0.0], "gauss": [0.0, 0.0], "gauss_q4_1": [0.0, 0.0]}
    for name, p in sd.items():
        if p.ndim != 2 or p.shape[-1] % 32:
            continue
        w = p.float().numpy()
        e, r = rel(w)
        per_tensor[name] = e
        gw = (rng.standard_normal(w.shape) * r).astype(np.float32)
        g4 = gguf.quants.dequantize(gguf.quants.quantize(gw, Q41), Q41).reshape(w.shape).astype(np.float32)
        for key, (ee, rr) in (("real", (e, r)), ("gauss", rel(gw)), ("gauss_q4_1", rel(g4))):
            tot[key][0] += ee ** 2 * w.size
            tot[key][1] += rr ** 2 * w.size
    out = {k: float(np.sqrt(a / b)) for k, (a, b) in tot.items()}
    out["per_tensor"] = per_tensor
    return out


def randomize(model_dir: Path, out_dir: Path, q4_1: bool) -> Path:
    """The same folder with random normal weights of each tensor's own std (optionally Q4_1-rounded)."""
    import gguf
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out_dir)
    sd = load_file(out_dir / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    new = {}
    for k, v in sd.items():
        if v.ndim < 2:
            new[k] = v
            continue
        r = torch.randn(v.shape, generator=g) * v.float().std()
        if q4_1:
            q = gguf.quants.quantize(r.numpy(), gguf.GGMLQuantizationType.Q4_1)
            r = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q4_1).reshape(v.shape).copy())
        new[k] = r.to(v.dtype)
    save_file(new, out_dir / "model.safetensors", metadata={"format": "pt"})
    return out_dir


def analyse(model_dir: Path, tmp: Path, label: str, full: bool) -> list[dict]:
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iceburg.export.gguf import write_gguf
    from iceburg.export.gguf_verify import PROMPTS

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = torch_logits(model, ids, act_q=False)
    allref = np.concatenate(ref)
    gaps = np.diff(np.sort(allref, -1)[:, -2:], axis=-1)[:, 0]
    scale = {"logit_scale": float(np.abs(allref).max()), "logit_std": float(allref.std()), "logit_top1_mean": float(allref.max(-1).mean()),
             "gap_median": float(np.median(gaps)), "decisive_share": float((gaps > 0.5).mean()),
             "positions": int(len(gaps))}
    rows = []

    def row(name, got, **extra):
        rows.append({"model": label, "variant": name, **compare(ref, got), **scale, **extra})
        rows[-1]["max_rel"] = rows[-1]["max_abs"] / scale["logit_scale"]
        print(rows[-1], flush=True)

    q8 = write_gguf(model_dir, tmp / f"{label}-q8_0.gguf", "q8_0")
    row("llama.cpp, iceburg Q8_0", llama_logits(q8, ids))
    f16 = write_gguf(model_dir, tmp / f"{label}-f16.gguf", "f16")
    row("llama.cpp, F16", llama_logits(f16, ids))
    f16.unlink()
    if full:
        f32 = write_gguf(model_dir, tmp / f"{label}-f32.gguf", "f32")
        theirs = tmp / f"{label}-llamacpp-q8_0.gguf"
        quantize_with_llama_cpp(f32, theirs)
        f32.unlink()
        a, b = tensor_bytes(q8), tensor_bytes(theirs)
        same = sum(int(np.array_equal(a[k], b[k])) for k in a if k in b)
        row("llama.cpp, llama.cpp's own Q8_0 (from F32)", llama_logits(theirs, ids),
            note=f"{same}/{len(a)} tensors byte-identical to iceburg's")
        theirs.unlink()
    # Sensitivity: Gaussian noise of the size of Q8_0's rounding error, tensor by tensor.
    sd = model.state_dict()
    stats = weight_error_stats(sd)
    weight_note = (f"Q8_0 relative weight error (rms err / rms w): real {stats['real']:.3%}, Gaussian {stats['gauss']:.3%}, "
                   f"Gaussian after Q4_1 {stats['gauss_q4_1']:.3%}")
    saved = {k: v.clone() for k, v in sd.items()}
    g = torch.Generator().manual_seed(0)
    seen = set()  # tied embedding/output: one storage, noised once
    for name, p in sd.items():
        if p.ndim == 2 and p.shape[-1] % 32 == 0 and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            p.add_(torch.randn(p.shape, generator=g) * stats["per_tensor"][name])
    row("torch, Gaussian noise of Q8_0's per-tensor rms error", torch_logits(model, ids, act_q=False))
    for k, v in saved.items():
        sd[k].copy_(v)
    del saved
    # torch with the file's own weights: dequantize every Q8_0 tensor back into the model
    for name, p in sd.items():
        if p.ndim == 2 and p.shape[-1] % 32 == 0:
            qt = gguf.quants.quantize(p.numpy(), gguf.GGMLQuantizationType.Q8_0)
            p.copy_(torch.from_numpy(gguf.quants.dequantize(qt, gguf.GGMLQuantizationType.Q8_0).reshape(p.shape)))
    row("torch, Q8_0 weights only", torch_logits(model, ids, act_q=False), note=weight_note)
    sim = torch_logits(model, ids, act_q=True)
    row("torch, Q8_0 weights + Q8_0 activations (llama.cpp's arithmetic)", sim)
    ll = llama_logits(q8, ids)
    rows.append({"model": label, "variant": "llama.cpp Q8_0 vs the torch simulation of row above",
                 **compare(sim, ll), **scale})
    rows[-1]["max_rel"] = rows[-1]["max_abs"] / scale["logit_scale"]
    print(rows[-1], flush=True)
    if full:
        # What a real defect looks like on the same scale: q/k rows left in HF's rotate-half layout.
        import dataclasses

        from iceburg.families import registry as reg

        arch = reg._ARCHS["llama"]  # the family registry's llama record, swapped for this one file
        reg._ARCHS["llama"] = dataclasses.replace(arch, gguf=dataclasses.replace(arch.gguf, permute_qk=False))
        try:
            bad = write_gguf(model_dir, tmp / f"{label}-noperm.gguf", "q8_0")
        finally:
            reg._ARCHS["llama"] = arch
        row("defect: Q8_0 with q/k not permuted", llama_logits(bad, ids))
        bad.unlink()
        for groups in ({"embd"}, {"attn"}, {"ffn"}):
            p = write_mixed(model_dir, tmp / f"{label}-mixed.gguf", groups)
            row(f"llama.cpp, F16 + Q8_0 only in {'/'.join(sorted(groups))}", llama_logits(p, ids))
            p.unlink()
    q8.unlink()
    return rows


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="an iceburg --base-model spec")
    ap.add_argument("--random-models", action="store_true",
                    help="also run the whole analysis on random weights of the same shapes (chaotic, slow)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from iceburg.testing.families import family_model_dir

    model_dir = family_model_dir(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rows += analyse(model_dir, tmp, args.model, full=True)
        if args.random_models:  # random 30-layer nets of real per-tensor std are chaotic: see docs
            rows += analyse(randomize(model_dir, tmp / "random", False), tmp, "random", full=False)
            rows += analyse(randomize(model_dir, tmp / "random-q4_1", True), tmp, "random-q4_1", full=False)
    meta = machine_info()
    cols = ["model", "variant", "max_abs", "max_rel", "rms", "kld_mean", "kld_max", "argmax", "argmax_decisive", "logit_std",
            "gap_median", "decisive_share", "note"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = ["# gguf_q8_0_error", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in meta.items()), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")
    (RESULTS / "gguf_q8_0_error.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "gguf_q8_0_error.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
