"""Progress reporting that stays readable in a terminal, a notebook, a piped log and CI.

One switch for every command: ``AGREID_PROGRESS`` = ``auto`` (default), ``bar``, ``lines`` or ``off``
(the CLI's ``--progress`` sets it; ``--quiet`` means ``off``).

- ``auto``: a tqdm bar on a terminal or in a Jupyter kernel, otherwise ``lines``;
- ``bar``: always a tqdm bar (``tqdm.auto``);
- ``lines``: one plain line at every 25 % of a loop (and at its end), no carriage returns, so a log
  file or a CI console stays one line per event;
- ``off``: nothing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable

PROGRESS_MODES = ("auto", "bar", "lines", "off")
LINE_STEP = 0.25  # a line every quarter of the loop in ``lines`` mode


def progress_mode() -> str:
    mode = os.environ.get("AGREID_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"AGREID_PROGRESS={mode!r}: expected one of {PROGRESS_MODES}")
    return mode


def set_progress_mode(mode: str) -> None:
    """Set the mode for this process and the processes it starts (notebook kernels, workers)."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress mode {mode!r}: expected one of {PROGRESS_MODES}")
    os.environ["AGREID_PROGRESS"] = mode


def bars_allowed() -> bool:
    """Whether a third-party carriage-return progress bar (papermill's per-cell bar, say) may be drawn:
    ``bar`` mode, or ``auto`` on a terminal / in Jupyter. Never into a piped log or CI output."""
    mode = progress_mode()
    return mode == "bar" or (mode == "auto" and _interactive())


def _interactive() -> bool:
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    shell = sys.modules.get("IPython")
    if shell is not None and "ipykernel" in sys.modules:
        try:
            ip = shell.get_ipython()  # type: ignore[attr-defined]
            return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
        except Exception:  # pragma: no cover - exotic IPython setups
            return False
    return False


class LineProgress:
    """The subset of tqdm's API the kit uses, printing a line at every ``LINE_STEP`` of ``total``."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0,
                 **_: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.n = int(initial)
        self.postfix = ""
        self._next = LINE_STEP
        while self.total and self.n / self.total >= self._next - 1e-9:
            self._next += LINE_STEP
        self._t0 = time.perf_counter()
        self._closed = False

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self.n / self.total >= self._next - 1e-9 and self.n < self.total:
            self._print()
            while self.n / self.total >= self._next - 1e-9:
                self._next += LINE_STEP

    def _print(self) -> None:
        seconds = time.perf_counter() - self._t0
        pct = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
        of = f"/{self.total}" if self.total else ""
        tail = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc}: {pct}({self.n}{of}) {seconds:.1f}s{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n:
                self._print()


def progress_bar(iterable: Iterable | None = None, total: int | None = None, desc: str = "", enabled: bool = True,
                 leave: bool = False, **kwargs: Any):
    """A tqdm bar, a :class:`LineProgress` or a disabled bar, by ``enabled`` and :func:`progress_mode`."""
    from tqdm.auto import tqdm

    mode = progress_mode()
    if not enabled or mode == "off":
        return tqdm(iterable, total=total, desc=desc, disable=True, **kwargs)
    if mode == "bar" or (mode == "auto" and _interactive()):
        return tqdm(iterable, total=total, desc=desc, leave=leave, **kwargs)
    return LineProgress(iterable, total=total, desc=desc, **kwargs)
