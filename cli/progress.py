"""Live progress on stderr for long runs, and the summary table at the end."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from amcs.scheduler import RunCounters

log = logging.getLogger("amcs")

# run_warnings: warn when more than this fraction of a run's rollouts were cut at max_new_tokens.
TRUNCATED_WARNING = 0.5


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


def run_warnings(records: Iterable[dict], config, out) -> list[str]:
    """What a finished run's output says about its setup, as sentences that point at the fix;
    `records` are the meta records of the output file (the last one per problem), `config` the
    run's SearchConfig.

    - No "-" label in the file: a PRM trained on it never sees a wrong step. The likely causes,
      counted over the problems that finished ok: root MC 0 (no root rollout right: a weak
      policy, or answers graded wrong), root MC below min_root_mc (screened, never searched),
      root MC 1 (every rollout right: nothing wrong to locate).
    - More than TRUNCATED_WARNING of the rollouts cut at max_new_tokens: a cut rollout counts
      as wrong and is never searched, so MC values come out too low.
    """
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return []

    def total(key: str) -> int:
        return sum(int((r.get("stats") or {}).get(key) or 0) for r in ok)

    warnings = []
    roots = [(r.get("tree") or {}).get("mc") for r in ok]
    if total("labels_negative") == 0:
        n = len(ok)
        causes = []
        zero = sum(mc == 0 for mc in roots)
        if zero:
            causes.append(
                f"root MC 0 on {zero} of {n} problems (no root rollout right: the policy is too "
                "weak for them, or its answers are graded wrong; --keep-rollouts and amcs view "
                "show the rollouts)"
            )
        screened = total("screened")
        if screened:
            causes.append(
                f"{screened} of {n} screened out with root MC below min_root_mc="
                f"{config.min_root_mc:g} (--set min_root_mc=0 searches them)"
            )
        one = sum(mc == 1 for mc in roots)
        if one:
            causes.append(
                f"root MC 1 on {one} of {n} (every rollout right, nothing wrong to locate: "
                "harder problems or a higher temperature)"
            )
        warnings.append(
            f'no "-" labels in {out}: a PRM trained on it never sees a wrong step'
            + (f"; {'; '.join(causes)}" if causes else "")
        )
    rollouts, cut = total("rollouts"), total("truncated")
    if rollouts and cut > TRUNCATED_WARNING * rollouts:
        default = type(config).__dataclass_fields__["max_new_tokens"].default
        warnings.append(
            f"{cut:,} of {rollouts:,} rollouts ({cut / rollouts:.0%}) were cut at "
            f"max_new_tokens={config.max_new_tokens}: a cut rollout counts as wrong and is never "
            f"searched, so MC values come out too low; raise it (e.g. --set "
            f"max_new_tokens={max(2 * config.max_new_tokens, default)})"
        )
    return warnings
