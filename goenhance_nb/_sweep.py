"""Parameter sweeps: every input x style x grid value, planned before anything is sent.

``sweep(inputs, styles=..., grid={...})`` first plans every item (validation, request key,
cache lookup, estimate: no job call), refuses at once when the new jobs would pass
``max_jobs`` or their estimated credits ``max_credits`` (:class:`BudgetExceeded`, nothing
sent), then submits through the session, whose engine keeps within the account's queueLimit.
Each item is checkpointed by the ledger and the cache: an interrupted sweep re-run re-attaches
to its jobs and serves finished ones from the cache, so no job is sent twice.

One progress display for the whole sweep: where someone watches live (a kernel with a
frontend), a :class:`~goenhance_nb.widgets.SweepProgress` bar updated from the jobs' events,
replaced by a static summary line when the sweep ends; headless (nbclient, papermill, a
terminal) only that summary line. The comparison grid is a regular HTML output (relative video
paths), never a widget, so it stays in the saved notebook.

``%goenhance sweep`` (``_magics.handle_sweep``) is the cell face.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goenhance_nb._display import ResultBundle, result_grid
from goenhance_nb._errors import BudgetExceeded, GoEnhanceError, InputError
from goenhance_nb._frontend import get_kernel, is_headless
from goenhance_nb._lifecycle import Badge, PlanStatus

if TYPE_CHECKING:  # annotations only
    from goenhance_nb._job import Job
    from goenhance_nb._session import Session

__all__ = ["GRID_KEYS", "Sweep", "SweepItem", "sweep"]

#: Parameters a grid may vary (each a list of values).
GRID_KEYS = ("duration", "resolution", "seed", "prompt")


@dataclass(slots=True)
class SweepItem:
    """One transformation of a sweep: what it is, its plan, and (once submitted) its job."""

    source: str
    style: str
    params: dict[str, Any]
    key: str
    status: str  # planned: a PlanStatus; after a run: Badge DONE, CACHED or FAILED (values)
    estimate: int
    job: Job | None = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """A flat row: input, style, the parameters, status, cost, output path, key, error."""
        job = self.job
        rec = job.record if job is not None and job.done() and job.error is None else None
        return {
            "input": self.source,
            "style": self.style,
            **self.params,
            "status": self.status,
            "estimate": self.estimate,
            "cost": rec.cost if rec is not None else None,
            "path": str(rec.file) if rec is not None else None,
            "job_id": job.id if job is not None else None,
            "key": self.key,
            "error": self.error,
        }


class Sweep:
    """The items of a sweep, its plan totals, and after a run its results.

    ``tally()`` / ``progress_line()`` (live counts from the jobs), ``records()`` (list of dicts), ``frame()`` (a pandas DataFrame when pandas is installed,
    else the records), ``grid()`` (the finished results as one notebook output).
    """

    def __init__(self, items: list[SweepItem], *, dry_run: bool) -> None:
        self.items = items
        self.dry_run = dry_run

    @property
    def new_jobs(self) -> int:
        """Items the plan found neither cached nor running (each a paid submission)."""
        return sum(1 for i in self.items if i.status == PlanStatus.NEW and i.job is None)

    @property
    def estimated_credits(self) -> int:
        """Estimated credits of the new jobs (an estimate: see ``Usage.estimate``)."""
        return sum(i.estimate for i in self.items if i.status == PlanStatus.NEW and i.job is None)

    def counts(self) -> dict[str, int]:
        """Items per status."""
        out: dict[str, int] = {}
        for i in self.items:
            out[i.status] = out.get(i.status, 0) + 1
        return out

    def tally(self) -> dict[str, int]:
        """Live counts from the jobs as they are now: ``done``, ``running``, ``cached``,
        ``failed``, ``planned`` (dry run: not submitted), and ``credits`` charged so far (the
        cost of every non-cached job whose cost is known)."""
        out = dict.fromkeys(("done", "running", "cached", "failed", "planned", "credits"), 0)
        for item in self.items:
            job = item.job
            if job is None:
                out["failed" if item.status == Badge.FAILED else "planned"] += 1
                continue
            if not job.done():
                out["running"] += 1
            elif job.error is not None or job.record is None:
                out["failed"] += 1
            else:
                out["cached" if job.cached else "done"] += 1
            if not job.cached and job.cost is not None:
                out["credits"] += int(job.cost)
        return out

    def progress_line(self) -> str:
        """One line: ``N/M finished: a done, b running, c cached, d failed; X credits so far``."""
        t = self.tally()
        finished = t["done"] + t["cached"] + t["failed"]
        return (
            f"{finished}/{len(self.items)} finished: {t['done']} done, {t['running']} running, "
            f"{t['cached']} cached, {t['failed']} failed; {t['credits']} credits so far"
        )

    def wait(self, timeout: float | None = None) -> Sweep:
        """Wait for every submitted item; a failed item keeps its one-line error."""
        for item in self.items:
            if item.job is None:
                continue
            try:
                item.job.result(timeout=timeout)
                item.status = (Badge.CACHED if item.job.cached else Badge.DONE).value
            except GoEnhanceError as exc:
                item.status, item.error = Badge.FAILED.value, f"{type(exc).__name__}: {exc}"
        return self

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per item, in sweep order."""
        return [i.record() for i in self.items]

    def frame(self) -> Any:
        """A pandas DataFrame of :meth:`records` when pandas is installed, else the records."""
        try:
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            return self.records()
        return pd.DataFrame(self.records())

    def grid(self, columns: int | None = None) -> ResultBundle:
        """The submitted items' results as one grid output (a cell per item, in order)."""
        jobs = [i.job for i in self.items if i.job is not None]
        inputs = max(1, len({i.source for i in self.items}))
        per_row = columns or max(1, len(self.items) // inputs)  # a row per input
        return result_grid(jobs, columns=per_row)

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items()))
        head = "sweep plan" if self.dry_run else "sweep"
        s = f"{head}: {len(self.items)} items ({parts})"
        if self.new_jobs:
            s += f"; {self.new_jobs} new jobs, about {self.estimated_credits} credits (estimate)"
        return s

    def __repr__(self) -> str:
        return f"<{self}>"


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, Path)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def sweep(
    inputs: str | Path | Sequence[str | Path],
    *,
    styles: int | str | Sequence[int | str],
    grid: Mapping[str, Sequence[Any]] | None = None,
    prompt: str | None = None,
    duration: int | None = None,
    resolution: str = "720p",
    seed: int = -1,
    max_credits: int | None = None,
    max_jobs: int | None = None,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float | None = None,
    progress: bool | None = None,
    session: Session | None = None,
) -> Sweep:
    """Run every ``inputs`` x ``styles`` x ``grid`` combination (grid keys: duration,
    resolution, seed, prompt; each a list), after planning all of them.

    ``duration`` None (default): each input's own length, rounded down, 3-30 s (as
    :meth:`Session.transform`); the plan and the grid show the resolved number.

    ``dry_run``: return the plan only (cached / running / new, estimated credits; no job call).
    ``max_jobs`` / ``max_credits`` cap the new jobs and their estimated credits; both are
    checked on the whole plan before anything is sent. ``wait``: block until every item ends
    (a failed item keeps its error; the sweep goes on). Re-running a sweep re-attaches to its
    jobs and serves finished ones from the cache (no duplicate job).

    ``progress``: True shows one live :class:`~goenhance_nb.widgets.SweepProgress` bar for the
    whole sweep (done / running / cached / failed, credits so far) and, once the sweep ended,
    replaces it by a static summary line; False shows nothing; None (default) picks the bar in
    a kernel someone watches and only the summary line when headless (nbclient, papermill,
    ``GOENHANCE_WAIT=1``) or outside a kernel. The summary line needs ``wait``.

    :raises InputError: a bad input, style or grid key, an input shorter than 3 s or a
        duration longer than an input (before anything is sent).
    :raises BudgetExceeded: the caps would be passed (nothing sent).
    """
    if session is None:
        from goenhance_nb._session import get_session

        session = get_session()
    base = {"duration": duration, "resolution": resolution, "seed": seed, "prompt": prompt}
    result = Sweep(_plan(session, inputs, styles, base, grid), dry_run=dry_run)
    _check_caps(result, max_jobs, max_credits)
    if dry_run:
        return result
    _submit(session, result.items)
    live = progress if progress is not None else (get_kernel() is not None and not is_headless())
    handle, bar = _show_progress(result) if live else (None, None)
    if not wait:
        return result
    result.wait(timeout)
    if bar is not None:
        bar.flush()  # the last state rendered (a throttled render may still be pending)
        bar.close()
    if progress is not False:
        _show_summary(result, handle)
    return result


def _grid_axes(grid: Mapping[str, Sequence[Any]] | None) -> list[tuple[str, list[Any]]]:
    """The grid as ``(key, values)`` pairs. :raises InputError: an unknown key or no values."""
    grid = dict(grid or {})
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise InputError(f"sweep: unknown grid key(s) {', '.join(unknown)}; allowed: {GRID_KEYS}")
    axes = [(k, _as_list(v)) for k, v in grid.items()]
    if any(not values for _, values in axes):
        raise InputError("sweep: every grid key needs at least one value")
    return axes


def _plan(
    session: Session,
    inputs: str | Path | Sequence[str | Path],
    styles: int | str | Sequence[int | str],
    base: dict[str, Any],
    grid: Mapping[str, Sequence[Any]] | None,
) -> list[SweepItem]:
    """One planned item per input x style x grid combination (``Session.plan``: no job call).

    :raises InputError: a bad grid, input or style.
    """
    axes = _grid_axes(grid)
    items: list[SweepItem] = []
    for source in _as_list(inputs):
        for style in _as_list(styles):
            for combo in itertools.product(*(values for _, values in axes)):
                params = {**base, **dict(zip((k for k, _ in axes), combo, strict=True))}
                plan = session.plan(source, style, **params)
                params["duration"] = plan.spec.duration  # None resolved: the input's length
                items.append(
                    SweepItem(
                        source=str(source),
                        style=plan.style,
                        params=params,
                        key=plan.key,
                        status=plan.status.value,
                        estimate=plan.estimate,
                    )
                )
    return items


def _check_caps(result: Sweep, max_jobs: int | None, max_credits: int | None) -> None:
    """:raises BudgetExceeded: the plan's new jobs or their estimated credits pass a cap."""
    if max_jobs is not None and result.new_jobs > max_jobs:
        raise BudgetExceeded(
            f"sweep: {result.new_jobs} new jobs would pass max_jobs={max_jobs} "
            f"({result.counts().get(PlanStatus.CACHED.value, 0)} cached); nothing was sent"
        )
    if max_credits is not None and result.estimated_credits > max_credits:
        raise BudgetExceeded(
            f"sweep: about {result.estimated_credits} credits (estimate) for "
            f"{result.new_jobs} new jobs would pass max_credits={max_credits}; nothing was sent"
        )


def _submit(session: Session, items: list[SweepItem]) -> None:
    """Submit every item through the session; an item that cannot be submitted is failed with
    its one-line error (the sweep goes on)."""
    for item in items:
        try:
            item.job = session.transform(item.source, item.style, **item.params)
        except GoEnhanceError as exc:
            item.status, item.error = Badge.FAILED.value, f"{type(exc).__name__}: {exc}"


def _show_progress(result: Sweep) -> tuple[Any, Any]:
    """Display one live :class:`~goenhance_nb.widgets.SweepProgress` bar; return its display
    handle and the bar."""
    from IPython.display import display

    from goenhance_nb.widgets._sweep_progress import SweepProgress

    bar = SweepProgress(result)
    handle = display(bar, display_id=True)  # type: ignore[no-untyped-call]
    return handle, bar


def _show_summary(result: Sweep, handle: Any) -> None:
    """The static end of the sweep's progress display: one summary line."""
    from goenhance_nb._progress import show_summary

    show_summary(f"sweep done, {result.progress_line()}", handle, klass="goenhance-sweep-summary")
