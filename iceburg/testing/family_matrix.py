"""The family x stage matrix (docs/families.md): each cell runs one real stage on one family's
fixture and returns passed/failed with the reason and the measured figure.

Used by tests/families/test_families.py (cheap cells) and bench/families_matrix.py (all cells,
writes the docs table). A cell that fails reports the stage's own error message: the matrix
records what happens, it never turns a failure into a pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import IceburgError
from .families import PROBE_CONVERSATION, family_model_dir, family_tokenizer_dir, get_family, vector_check

logger = logging.getLogger(__name__)

CELLS = ["tokenizer", "encoding", "lora", "gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "ollama", "onnx"]


@dataclass
class Cell:
    status: str  # "pass" | "fail" | "not run" (nothing to check) | "not verified" (written, no proof ran)
    figure: str  # the measured figure, in words
    reason: str = ""
    seconds: float = 0.0
    data: dict[str, Any] | None = None
    verdict: str = ""  # the stage's own word for a pass: "proven" (judged against limits), "measured"

    def as_row(self) -> str:
        if self.status == "pass":
            text = f"{self.verdict or 'pass'}: {self.figure}"
        elif self.status == "not verified":
            text = f"written, not verified: {self.reason}"
        else:
            text = f"**fail**: {self.reason}" if self.status == "fail" else f"{self.status}: {self.reason}"
        return text.replace("|", "\\|").replace("\n", " ")


def _from_status(status: str, figure: str, data: dict[str, Any]) -> Cell:
    """A cell from an exporter's status string (export.base: proven / measured / written, not
    verified: why / failed: why)."""
    if status.startswith(("proven", "measured")):
        return Cell("pass", figure, data=data, verdict=status.split(";")[0])
    if status.startswith("written, not verified: "):
        return Cell("not verified", figure, status.removeprefix("written, not verified: "), data=data)
    return Cell("fail", figure, status.removeprefix("failed: "), data=data)


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(family_model_dir(name))


def cell_tokenizer(name: str, out_dir: Path | None = None) -> Cell:
    """The converted tokenizer against llama.cpp's own .inp/.out vectors."""
    family = get_family(name)
    if not family.vocab:
        return Cell("not run", "", "its own vocabulary, no llama.cpp vectors to compare with (the GGUF "
                    "tokenization proof checks it)")
    tok = _tokenizer(name)
    res = vector_check(tok, family.vocab)
    bad = "; ".join(repr(m["text"])[:40] for m in res["mismatches"][:3])
    figure = f"{res['matched']}/{res['total']} llama.cpp vectors"
    if res["mismatches"]:  # llama.cpp's own expected ids: any difference is a tokenizer bug
        return Cell("fail", figure, f"{figure}; differ: {bad}", data=res)
    return Cell("pass", figure, data=res, verdict="proven")


def supervised_segments(ex) -> list[list[int]]:
    segs, cur = [], []
    for i, m in zip(ex.input_ids, ex.mask):
        if m:
            cur.append(i)
        elif cur:
            segs.append(cur)
            cur = []
    return segs + ([cur] if cur else [])


def cell_encoding(name: str, out_dir: Path | None = None) -> Cell:
    """Assistant-only masks under the real template: every supervised segment decodes to the
    assistant text plus the end-of-turn token (plus what the template itself injects there,
    e.g. Qwen3's empty think block, reported)."""
    from ..records import Record
    from ..training.encoding import encode_record, eos_ids

    tok = _tokenizer(name)
    from transformers import GenerationConfig

    eos = eos_ids(tok, GenerationConfig.from_pretrained(family_model_dir(name)))
    examples = encode_record(tok, Record(messages=PROBE_CONVERSATION), 4096, eos)
    answers = [m["content"] for m in PROBE_CONVERSATION if m["role"] == "assistant"]
    segs = [s for ex in examples for s in supervised_segments(ex)]
    eot = {tok.convert_ids_to_tokens(i) for i in eos}
    injected = set()
    for seg, answer in zip(segs, answers[-len(segs):] if len(examples) > 1 else answers):
        text = tok.decode(seg)
        end = next((t for t in eot if text.endswith(t)), None)
        if end is None or answer not in text:
            return Cell("fail", "", f"supervised text {text!r} is not {answer!r} + an end-of-turn token")
        extra = text[: len(text) - len(end)].replace(answer, "").strip()
        if extra:
            injected.add(extra)
    if len(segs) != len(answers):
        return Cell("fail", "", f"{len(segs)} supervised segments for {len(answers)} assistant turns")
    mode = f"{len(examples)} examples (one per assistant turn)" if len(examples) > 1 else "1 example"
    figure = f"{len(segs)}/{len(answers)} turns = answer + end-of-turn; {mode}"
    if injected:
        figure += f"; template-injected text supervised: {sorted(injected)}"
    return Cell("pass", figure, data={"examples": len(examples), "injected": sorted(injected)})


def cell_lora(name: str, out_dir: Path | None = None, steps: int = 30) -> Cell:
    """LoRA (all linear layers, r=8) through iceburg's trainer on six short Q&A chats; loss before
    and after on two HELD-OUT chats of the same shape (other questions, other answers) and on the
    training chats. Passes when the held-out loss falls: the model learned the task's form
    (brief answer, then the end-of-turn token) rather than only memorising its training text."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GenerationConfig

    from ..records import Record
    from ..training.encoding import encode_record, eos_ids
    from ..training.trainer import TrainArgs, evaluate, train

    model_dir = family_model_dir(name)
    tok = _tokenizer(name)
    eos = eos_ids(tok, GenerationConfig.from_pretrained(model_dir))
    facts = [("boiling point of water", "100 degrees Celsius at sea level."), ("capital of France", "Paris."),
             ("largest planet", "Jupiter."), ("speed of light", "About 300,000 km per second."),
             ("author of Hamlet", "William Shakespeare."), ("chemical symbol for gold", "Au.")]
    held_out = [("capital of Japan", "Tokyo."), ("chemical symbol for iron", "Fe.")]

    def encode(pairs):
        records = [Record(messages=[{"role": "system", "content": "Answer briefly."},
                                    {"role": "user", "content": f"What is the {q}?"},
                                    {"role": "assistant", "content": a}]) for q, a in pairs]
        return [e for r in records for e in encode_record(tok, r, 256, eos)]

    examples, heldout = encode(facts), encode(held_out)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    # random fixtures start at ~uniform loss and need a large step (5e-3) to move in 30 steps; real
    # pretrained weights memorise six facts at that rate (SmolLM2: train loss 2.83 -> 0.00) and then
    # can lose held-out loss, so they take 5e-4 (a usual LoRA rate for pretrained weights)
    lr = 5e-3 if get_family(name).fixture else 5e-4
    args = TrainArgs(max_steps=steps, epochs=100, learning_rate=lr, warmup_ratio=0.0, max_length=256,
                     packing=False, pad_id=tok.pad_token_id or 0, show_progress=False)
    before, train_before = evaluate(model, heldout, args), evaluate(model, examples, args)
    out = train(model, examples, lambda epoch: list(range(len(examples))), heldout, args)
    after, train_after = evaluate(model, heldout, args), evaluate(model, examples, args)
    figure = (f"held-out loss {before:.2f} -> {after:.2f} (train {train_before:.2f} -> {train_after:.2f}) "
              f"in {out.steps} steps at lr {lr:g}")
    status = "pass" if after < before else "fail"
    return Cell(status, figure, "" if status == "pass" else f"held-out loss did not fall ({figure})",
                data={"heldout_before": before, "heldout_after": after,
                      "train_before": train_before, "train_after": train_after})


def cell_gguf(name: str, out_dir: Path, file_type: str) -> Cell:
    """Write the GGUF, prove it in llama.cpp (logits, greedy, tokenization on the probe texts and
    the family's .inp vectors) and apply the export's limits."""
    from ..export.gguf import write_gguf
    from ..export.gguf_verify import MIN_JUDGED_POSITIONS, SAMPLE_TEXTS, verify_gguf
    from .llama_cpp_assets import read_vectors, vocab_path

    model_dir = family_model_dir(name)
    family = get_family(name)
    texts = SAMPLE_TEXTS + ([t for t, _ in read_vectors(vocab_path(family.vocab)) if t] if family.vocab else [])
    path = write_gguf(model_dir, Path(out_dir) / f"{name}-{file_type}.gguf", file_type)
    report = verify_gguf(model_dir, path, file_type=file_type, sample_texts=texts)
    judgement = report["judgement"]
    promoted = sorted(set(report["llama_cpp_promoted_tokens"].values()))
    k = report["decisive_positions"]
    decisive = (f"decisive argmax not judged ({k} positions)" if k < MIN_JUDGED_POSITIONS
                else f"{report['argmax_agreement_decisive']:.1%} of {k} decisive")
    figure = (f"max|dlogit| {report['max_abs_logit_diff']:.3g} (logit scale {report['logit_scale']:.3g}), "
              f"KLD {report['kld_mean']:.2g}, argmax {report['argmax_agreement']:.1%} ({decisive}), "
              f"tokenization {report['tokenization_texts'] - len(report['tokenization_mismatches'])}/"
              f"{report['tokenization_texts']} texts")
    if promoted:
        figure += f"; llama.cpp promotes {promoted} to control ({len(report['tokenization_promoted'])} texts differ by it)"
    path.unlink(missing_ok=True)
    if judgement["failures"]:
        return Cell("fail", figure, "; ".join(judgement["failures"])[:300], data=report)
    return Cell("pass", figure, data=report, verdict=judgement["verdict"])


def cell_ollama(name: str, out_dir: Path) -> Cell:
    """`--formats ollama` alone: GGUF written and proven, TEMPLATE proven by Go, stops listed."""
    from ..export import ollama
    from ..export.base import ExportContext

    ctx = ExportContext(name=f"{name}-fixture", quantization=["f16"], system_prompt="You are a careful assistant.")
    result = ollama.export(family_model_dir(name), Path(out_dir), ctx)
    rep = result.report
    check = rep["template_check"]
    figure = (f"family {rep['template']['family']}, stops {rep['template']['stops']}, GGUF proof "
              f"{rep['gguf_proof']['proof']}; {check['status'][:60]}")
    for f in result.files:
        if f.suffix == ".gguf":
            f.unlink(missing_ok=True)
    return _from_status(ollama.SPEC.status(rep), figure, rep)


def cell_onnx(name: str, out_dir: Path) -> Cell:
    from ..export import onnx
    from ..export.base import ExportContext

    result = onnx.export(family_model_dir(name), Path(out_dir), ExportContext(name=f"{name}-fixture"))
    fp = result.report.get("fp32") or {}
    worst = max(fp.get("max_abs_diff_single", float("nan")), fp.get("max_abs_diff_batched_padded", float("nan")))
    greedy = "greedy equal" if (result.report.get("greedy") or {}).get("equal") else "greedy differs"
    return _from_status(onnx.SPEC.status(result.report), f"max|dlogit| {worst:.2g} vs torch, {greedy}", result.report)


RUNNERS: dict[str, Callable[[str, Path], Cell]] = {
    "tokenizer": cell_tokenizer, "encoding": cell_encoding, "lora": cell_lora,
    "gguf_f16": lambda n, d: cell_gguf(n, d, "f16"), "gguf_q8_0": lambda n, d: cell_gguf(n, d, "q8_0"),
    "gguf_q4_k_m": lambda n, d: cell_gguf(n, d, "q4_k_m"), "ollama": cell_ollama, "onnx": cell_onnx,
}


def run_cell(name: str, cell: str, out_dir: Path) -> Cell:
    """Run one cell; a user-facing error of the stage (IceburgError) is the cell's failure reason."""
    t0 = time.perf_counter()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        result = RUNNERS[cell](name, Path(out_dir))
    except IceburgError as e:
        result = Cell("fail", "", f"{type(e).__name__}: {e}")
    result.seconds = round(time.perf_counter() - t0, 2)
    logger.info("%s / %s: %s (%.1fs)", name, cell, result.as_row(), result.seconds)
    return result


def matrix_markdown(results: dict[str, dict[str, Cell]]) -> str:
    cells = [c for c in CELLS if any(c in row for row in results.values())]
    lines = ["| family | " + " | ".join(cells) + " |", "|---" * (len(cells) + 1) + "|"]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(row[c].as_row() if c in row else "-" for c in cells) + " |")
    return "\n".join(lines)
