"""Release gates over eval.json metrics: `tool_call_accuracy>=base`, `truth_pass_rate>=base-0.02`,
`forgetting_loss<=base+0.05`, or a fixed number (`stop_rate>=0.5`).

A gate compares the tuned model's value (the point estimate over the evaluated items) with the
base's value plus an offset, or with a constant. The decision uses the point estimate, so a gate
is predictable and its threshold means what it says; the bootstrap interval of the difference is
reported beside it so a reader can see whether a failure (or a pass) is within noise. A gate on a
metric that was not measured (no item carries it, e.g. tool-call accuracy with no held-out tool
transcript) fails: a gate that cannot be checked must not let a model through.
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass

from ..errors import IceburgError

GATE_EXIT = 3  # `iceburg eval` exit status when a gate fails (2 is a user error, 0 all passed)
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_GATE = re.compile(r"^\s*([a-z][a-z0-9_.]*)\s*(>=|<=|>|<)\s*(?:(base)\s*(?:([+-])\s*(\d+(?:\.\d+)?))?"
                   r"|([+-]?\d+(?:\.\d+)?))\s*$")


class GateError(IceburgError):
    """A gate that does not parse."""


@dataclass
class Gate:
    text: str
    metric: str
    op: str
    relative: bool  # compared with base + offset (True) or with a constant
    offset: float  # the offset (relative) or the constant

    def threshold(self, base: float) -> float:
        return base + self.offset if self.relative else self.offset


@dataclass
class GateResult:
    gate: str
    metric: str
    passed: bool
    tuned: float | None
    base: float | None
    threshold: float | None
    delta: float | None
    ci95: list[float] | None
    n: int
    message: str


def parse_gate(text: str) -> Gate:
    m = _GATE.match(text)
    if not m:
        raise GateError(f"--gate {text!r}: expected METRIC OP base[+-X] or METRIC OP NUMBER with OP one of "
                        ">=, <=, >, < (e.g. 'truth_pass_rate>=base-0.02', 'stop_rate>=0.5')")
    metric, op, base, sign, off, const = m.groups()
    if base:
        return Gate(text.strip(), metric, op, True, (-1 if sign == "-" else 1) * float(off or 0))
    return Gate(text.strip(), metric, op, False, float(const))


def parse_gates(texts: list[str] | None) -> list[Gate]:
    """Every gate parsed; all problems in one error."""
    gates, problems = [], []
    for t in texts or []:
        try:
            gates.append(parse_gate(t))
        except GateError as e:
            problems.append(str(e))
    if problems:
        raise GateError("; ".join(problems))
    return gates


def check_gate(gate: Gate, metrics: dict[str, dict]) -> GateResult:
    m = metrics.get(gate.metric)
    if m is None or m.get("tuned") is None or m.get("base") is None:
        known = ", ".join(sorted(k for k, v in metrics.items() if v.get("n")))
        why = (f"was not measured (n={m.get('n', 0) if m else 0}): no evaluated item carries it (tool metrics need "
               "held-out tool transcripts that both chat templates can write)") if m or _known(gate.metric) \
            else "is not a metric iceburg eval measures"
        return GateResult(gate.text, gate.metric, False, None, None, None, None, None, 0,
                          f"gate {gate.text}: FAILED: {gate.metric} {why}; measured: {known}")
    thr = gate.threshold(m["base"])
    ok = _OPS[gate.op](m["tuned"], thr)
    ci = m.get("ci95")
    ci_text = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a"
    msg = (f"gate {gate.text}: {'passed' if ok else 'FAILED'}: tuned {m['tuned']:.4f} vs base {m['base']:.4f} "
           f"(threshold {thr:.4f}; tuned - base {m['delta']:+.4f}, 95% CI {ci_text}, n={m['n']})")
    return GateResult(gate.text, gate.metric, ok, m["tuned"], m["base"], round(thr, 6), m["delta"], ci,
                      m["n"], msg)


def _known(metric: str) -> bool:
    from .metrics import DIRECTION

    name = metric.removeprefix("sampled.")
    return name in DIRECTION or name.startswith("rubric_")


def check_gates(texts: list[str] | None, metrics: dict[str, dict]) -> list[dict]:
    return [asdict(check_gate(g, metrics)) for g in parse_gates(texts)]


def failed(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["passed"]]
