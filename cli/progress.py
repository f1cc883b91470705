"""Live progress on stderr for long runs, and the summary table at the end."""

from __future__ import annotations

import logging
import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from amcs.engine import RunCounters

log = logging.getLogger("amcs")


def _rates(c: RunCounters) -> str:
    elapsed = max(c.elapsed, 1e-9)
    if c.waiting_since is not None:
        waited = time.monotonic() - c.waiting_since
        return f"waiting for the server ({waited:.0f} s): {c.waiting_reason[:200]}"
    parts = [
        f"{c.rollouts / elapsed:,.1f} rollouts/s",
        f"{c.tokens / elapsed:,.0f} tokens/s",
        f"labels +{c.labels_positive:,}/-{c.labels_negative:,}",
        f"early exits {c.early_exits:,}",
        f"failed {c.failed}",
    ]
    if c.cache_hit_ratio is not None:
        parts.append(f"cache hit {c.cache_hit_ratio:.0%}")
    if c.retries:
        parts.append(f"retries {c.retries}")
    if c.grading_unresolved:
        parts.append(f"grading timeouts unresolved {c.grading_unresolved}")
    return " · ".join(parts)


class RunDisplay:
    """A rich live display (problems done/total, rates, labels, ETA), or with quiet=True a log
    line every `interval` seconds."""

    def __init__(self, counters: RunCounters, quiet: bool = False, interval: float = 10.0) -> None:
        self.c = counters
        self.quiet = quiet
        self.interval = interval
        self._stop = threading.Event()
        self._progress = Progress(
            TextColumn("problems"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("generate", total=None)
        self._live: Live | None = None
        self._thread: threading.Thread | None = None

    def _render(self):
        c = self.c
        self._progress.update(self._task, total=c.total - c.skipped, completed=c.done + c.failed)
        return Group(self._progress, _rates(c))

    def _log_loop(self) -> None:
        while not self._stop.wait(self.interval):
            c = self.c
            log.info("problems %d/%d · %s", c.done + c.failed, c.total - c.skipped, _rates(c))

    def __enter__(self) -> RunDisplay:
        if self.quiet:
            self._thread = threading.Thread(target=self._log_loop, daemon=True)
            self._thread.start()
        else:
            self._live = Live(
                get_renderable=self._render,
                console=Console(stderr=True),
                refresh_per_second=4,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.__exit__(*exc)


def summary_table(c: RunCounters, out) -> Table:
    table = Table(title=f"amcs generate → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("problems labelled", f"{c.done:,}"),
        ("problems failed", f"{c.failed:,}"),
        ("skipped (already in file)", f"{c.skipped:,}"),
        ("labelled paths written", f"{c.paths:,}"),
        ("step labels + / -", f"{c.labels_positive:,} / {c.labels_negative:,}"),
        ("rollouts", f"{c.rollouts:,}"),
        ("generated tokens", f"{c.tokens:,}"),
        ("early exits", f"{c.early_exits:,}"),
        (
            "grading timeouts (retried / unresolved)",
            f"{c.grading_retried:,} / {c.grading_unresolved:,}",
        ),
        ("wall time", f"{c.elapsed:,.1f} s"),
        ("rollouts/s", f"{c.rollouts / max(c.elapsed, 1e-9):,.1f}"),
        ("tokens/s", f"{c.tokens / max(c.elapsed, 1e-9):,.0f}"),
    ]
    if c.cache_hit_ratio is not None:
        rows.append(("prefix cache hit ratio", f"{c.cache_hit_ratio:.1%}"))
    if c.retries:
        rows.append(("request retries", f"{c.retries:,}"))
    if c.retried:
        rows.append(("failed before, searched again", f"{c.retried:,}"))
    if c.outages:
        rows.append(("server outages waited out", f"{c.outages:,}"))
    for kind, n in sorted(c.failure_reasons.items(), key=lambda kv: -kv[1]):
        rows.append((f"failed: {kind}", f"{n:,}"))
    for k, v in rows:
        table.add_row(k, v)
    return table
