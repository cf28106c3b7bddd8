"""Progress display for the long stages, through one library: tqdm (what the training bar uses).

Every stage that can take more than a few seconds shows a bar on stderr: building a base
(GGUF -> HF folder, iceburg-tiny pre-training), embedding for emergence scoring, training, and
the exports (one line per finished export). Bars show only on a terminal by
default (tqdm's `disable=None`); `--json` turns them off (`set_enabled(False)`) so the command's
stdout and stderr stay machine-readable, and a caller can force them on (tests, notebooks).
"""

from __future__ import annotations

from typing import Any, Iterable

_enabled: bool | None = None  # None: only when stderr is a terminal


def set_enabled(value: bool | None) -> None:
    """True: always show bars; False: never (what `--json` sets); None: only on a terminal."""
    global _enabled
    _enabled = value


def disable_flag(explicit: bool | None = None) -> bool | None:
    """tqdm's `disable` argument: an explicit per-call choice wins, else the process setting."""
    choice = _enabled if explicit is None else explicit
    return None if choice is None else not choice


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        leave: bool = True, show: bool | None = None, **kw: Any):
    """A tqdm bar on stderr that obeys `set_enabled` (or `show`, when given)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable_flag(show),
                dynamic_ncols=True, **kw)


class StepBar:
    """A bar over the named steps of one stage ("building base smollm2-135m: save weights").

    `with StepBar("building base", ["load", "save"]) as s: ...; s.step("load"); ...` moves the bar
    when each step *starts*, so the label says what is running now; leaving the block completes it.
    """

    def __init__(self, desc: str, steps: list[str], show: bool | None = None):
        self.desc, self.steps, self._n = desc, steps, 0
        self._bar = bar(total=len(steps), desc=desc, unit="step", show=show,
                        bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]")

    def step(self, name: str) -> None:
        if self._n:
            self._bar.update(1)
        self._n += 1
        self._bar.set_postfix_str(name)

    def write(self, line: str) -> None:
        """A line above the bar (one per finished export, for example)."""
        if not self._bar.disable:
            self._bar.write(line, file=self._bar.fp)

    def __enter__(self) -> "StepBar":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None and self._n:
            self._bar.update(1)
            self._bar.set_postfix_str("done")
        self._bar.close()
