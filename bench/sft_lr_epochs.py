"""Learning-rate x epochs study of the README's main command (issue 27): does more SFT make the
SmolLM2 surveyor better by `iceburg eval`'s behaviour metrics, or only lower its loss?

Each cell is the README's main command (`make demo`'s flags minus the exports and the side-by-side)
with one learning rate and one number of epochs, evaluated exactly as docs/evaluation.md evaluates
the demo's run: the held-out split plus the bundled dissident transcripts (its deliberately broken
lines left out, because --eval-data refuses a file with unusable lines), 8 answer prompts per suite,
greedy, 384-token budget, paired bootstrap, and the issue's three gates. One row per cell with each
metric's base, tuned, delta and 95% interval, and the gate outcome.

Usage: python bench/sft_lr_epochs.py [--lrs 0.0005333333333333334 0.0016] [--epochs 1 3] [--workdir /tmp/sft_study]
Cells whose run folder already holds eval.json are read, not re-run (the study resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
GATES = ["tool_call_accuracy>=base", "truth_pass_rate>=base-0.02", "forgetting_loss<=base+0.05"]
METRICS = ["heldout_loss", "forgetting_loss", "truth_pass_rate", "defect_repetition", "stop_rate",
           "reference_similarity", "rubric_score", "tool_call_accuracy", "answer_tokens"]


def usable_eval_data(workdir: Path) -> Path:
    """The bundled dissident transcripts without the lines the loader rejects (their broken lines)."""
    from iceburg.data.loader import normalise
    from iceburg.errors import IceburgError

    src = ROOT / "iceburg" / "data" / "sample" / "dissident.jsonl"
    out = workdir / "dissident_usable.jsonl"
    lines, bad = [], []
    for i, ln in enumerate(src.read_text().splitlines(), 1):
        try:
            normalise(json.loads(ln), str(src), i)
            lines.append(ln)
        except (ValueError, IceburgError):  # json.JSONDecodeError is a ValueError
            bad.append(i)
    out.write_text("\n".join(lines) + "\n")
    print(f"eval data: {len(lines)} usable lines of {src.name} ({len(bad)} rejected: lines {bad})")
    return out


def train(cell_dir: Path, lr: float, epochs: int, threads: int) -> tuple[Path, float]:
    runs = [p for p in cell_dir.glob("*/result.json")]
    if runs:
        return runs[0].parent, json.loads((cell_dir / "train_seconds.json").read_text())["seconds"]
    cmd = [str(VENV_BIN / "iceburg-train"), "--model-type", "surveyor", "--base-model", "smollm2-135m",
           "--max-seq-length", "512", "--epochs", str(epochs), "--learning-rate", str(lr),
           "--threads", str(threads), "--compare", "0", "--formats", "huggingface",
           "--output-dir", str(cell_dir)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=open(cell_dir / "train.log", "w"), stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    (cell_dir / "train_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return next(cell_dir.glob("*/result.json")).parent, seconds


def evaluate(run: Path, eval_data: Path, threads: int) -> tuple[dict, int]:
    if (run / "eval.json").exists() and (run / "eval_rc.json").exists():
        return json.loads((run / "eval.json").read_text()), json.loads((run / "eval_rc.json").read_text())["rc"]
    cmd = [str(VENV_BIN / "iceburg"), "eval", str(run), "--eval-data", str(eval_data), "--prompts", "8",
           "--threads", str(threads)] + [a for g in GATES for a in ("--gate", g)]
    rc = subprocess.run(cmd, cwd=ROOT, stdout=open(run / "eval.log", "w"), stderr=subprocess.STDOUT).returncode
    if rc not in (0, 3):
        raise SystemExit(f"iceburg eval failed (exit {rc}): see {run / 'eval.log'}")
    (run / "eval_rc.json").write_text(json.dumps({"rc": rc}))
    return json.loads((run / "eval.json").read_text()), rc


def row(lr: float, epochs: int, run: Path, seconds: float, ev: dict, rc: int, threads: int) -> dict:
    result = json.loads((run / "result.json").read_text())
    # a cell reused from another run (the demo's own, docs/using.md) says how it ran in cell.json
    cell = json.loads((run.parent / "cell.json").read_text()) if (run.parent / "cell.json").exists() else {}
    evaluated = time.strftime("%Y-%m-%d %H:%M", time.gmtime((run / "eval.json").stat().st_mtime))
    r = {"lr": lr, "epochs": epochs, "steps": result.get("steps") or result.get("global_step"),
         "threads": cell.get("threads", threads), "evaluated_utc": cell.get("evaluated_utc", evaluated), "cell_note": cell.get("note", ""),
         "train_s": round(result["training_seconds"], 1), "command_s": round(seconds, 1),
         "eval_loss": f"{result['eval_loss_before']:.4f} -> {result['eval_loss_after']:.4f}", "gates": "pass (exit 0)" if rc == 0 else "FAIL (exit 3)"}
    for m in METRICS:
        v = ev["metrics"].get(m)
        if v is None:
            continue
        lo, hi = v["ci95"]
        r[m] = f"{v['base']:.4g} -> {v['tuned']:.4g} [{lo:+.3g}, {hi:+.3g}]"
        r[f"{m}_raw"] = v
    r["failed_gates"] = [g.get("gate") for g in ev.get("gates", []) if not g.get("passed")]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.0005333333333333334, 0.0016])
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sft_study"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import os

    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    eval_data = usable_eval_data(args.workdir)
    meta = machine_info() | {"threads": threads, "started_load_avg": os.getloadavg()}
    rows = []
    for epochs in args.epochs:
        for lr in args.lrs:
            cell = args.workdir / f"lr{lr:g}_ep{epochs}"
            cell.mkdir(exist_ok=True)
            run, seconds = train(cell, lr, epochs, threads)
            ev, rc = evaluate(run, eval_data, threads)
            rows.append(row(lr, epochs, run, seconds, ev, rc, threads))
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_raw")}), flush=True)
    meta["ended_load_avg"] = os.getloadavg()
    meta["note"] = ("machine/load above: when this table was written; each cell's threads and evaluation time "
                    "are its own columns (cells already evaluated are read from their eval.json)")
    cols = ["lr", "epochs", "steps", "threads", "evaluated_utc", "train_s", "eval_loss", "gates"] + METRICS
    print(save("SmolLM2-135M surveyor: learning rate x epochs, iceburg eval (issue 27)", rows, meta, cols))


if __name__ == "__main__":
    main()
