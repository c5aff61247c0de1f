"""Progress of a list of jobs: :func:`tally_jobs`, :func:`progress_line`, :func:`wait_all`.

``goenhance_nb.wait_all(jobs)`` waits for every job and shows ONE progress display for the
list (done / running / cached / failed, credits so far), the sweep's display generalised:
where someone watches live (a kernel with a frontend) a
:class:`~goenhance_nb.widgets.JobsProgress` bar updated from the jobs' events, replaced by a
static summary line when the wait ends (so the saved notebook holds no widget); headless
(nbclient, papermill, ``GOENHANCE_WAIT=1``) or outside a kernel only that summary line.
"""

from __future__ import annotations

import concurrent.futures
import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from goenhance_nb._errors import GoEnhanceError
from goenhance_nb._frontend import get_kernel, is_headless

if TYPE_CHECKING:  # annotations only
    from goenhance_nb._job import Job
    from goenhance_nb.widgets._sweep_progress import JobsProgress, ProgressView

__all__ = ["JobsTally", "progress_line", "tally_jobs", "wait_all"]


@dataclass(frozen=True, slots=True)
class JobsTally:
    """Counts of a list of jobs at one moment.

    ``done`` (a new result), ``cached`` (served from the cache), ``failed`` (an error or a
    timeout), ``stopped`` (the watch was stopped: the job may still finish on the server),
    ``running`` (not finished here yet), and ``credits``: the cost of every job that is not a
    cache hit and whose cost is known.
    """

    done: int = 0
    running: int = 0
    cached: int = 0
    failed: int = 0
    stopped: int = 0
    credits: int = 0

    @property
    def total(self) -> int:
        """All jobs counted."""
        return self.done + self.running + self.cached + self.failed + self.stopped

    @property
    def finished(self) -> int:
        """Jobs no longer running here (done, cached, failed or stopped)."""
        return self.total - self.running


def _outcome(job: Job) -> str:
    """``running``, ``stopped``, ``failed``, ``cached`` or ``done`` for one job."""
    if not job.done():
        return "running"
    if job.record is not None:
        return "cached" if job.cached else "done"
    if job.error is None:
        return "stopped"  # finished without result or error: the watch was cancelled
    return "failed"


def tally_jobs(jobs: Iterable[Job]) -> JobsTally:
    """Count ``jobs`` as they are now (see :class:`JobsTally`). Never blocks."""
    counts = dict.fromkeys(("done", "running", "cached", "failed", "stopped", "credits"), 0)
    for job in jobs:
        counts[_outcome(job)] += 1
        if not job.cached and job.cost is not None:
            counts["credits"] += int(job.cost)
    return JobsTally(**counts)


def progress_line(t: JobsTally) -> str:
    """``N/M finished: a done, b running, c cached, d failed; X credits so far`` (``, e not
    watching`` after ``failed`` when a watch was stopped)."""
    stopped = f", {t.stopped} not watching" if t.stopped else ""
    return (
        f"{t.finished}/{t.total} finished: {t.done} done, {t.running} running, "
        f"{t.cached} cached, {t.failed} failed{stopped}; {t.credits} credits so far"
    )


def _view(jobs: Sequence[Job]) -> ProgressView:
    from goenhance_nb.widgets._sweep_progress import ProgressView

    t = tally_jobs(jobs)
    return ProgressView(t.finished, t.total, t.failed, progress_line(t))


def wait_all(
    jobs: Iterable[Job], timeout: float | None = None, *, progress: bool | None = None
) -> list[Job]:
    """Wait until every job in ``jobs`` has finished; show one progress display meanwhile.

    A failed job does not stop the wait (its error stays on ``job.error``; the display counts
    it as failed). ``timeout``: seconds for the whole list (``None``: no limit). ``progress``:
    True shows the live bar (and the summary line at the end), False nothing, None (default)
    the bar in a kernel someone watches and only the summary line headless or outside a
    kernel. The bar is replaced by the summary line however the wait ends (also on timeout or
    an interrupt).

    :returns: the jobs, in the order given.
    :raises TimeoutError: ``timeout`` passed first (the unfinished jobs keep running).
    """
    jobs = list(jobs)
    live = progress if progress is not None else (get_kernel() is not None and not is_headless())
    bar: JobsProgress | None = None
    handle: Any = None
    if live:
        from IPython.display import display

        from goenhance_nb.widgets._sweep_progress import JobsProgress

        bar = JobsProgress(jobs, lambda: _view(jobs), description="jobs")
        handle = display(bar, display_id=True)  # type: ignore[no-untyped-call]
    ended = "done"
    try:
        ended = _wait_each(jobs, timeout)
    except BaseException:
        ended = "interrupted"
        raise
    finally:
        if bar is not None:
            bar.flush()  # the last state rendered (a throttled render may still be pending)
            bar.close()
        if progress is not False:
            show_summary(f"{ended}, {progress_line(tally_jobs(jobs))}", handle)
    if ended == "timed out":
        running = sum(1 for j in jobs if not j.done())
        raise TimeoutError(
            f"{running} of {len(jobs)} jobs still running after {timeout} s (they keep running)"
        )
    return jobs


def _wait_each(jobs: Sequence[Job], timeout: float | None) -> str:
    """Wait for each job within one deadline: ``"done"``, or ``"timed out"``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for job in jobs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            job.result(timeout=left)
        except TimeoutError:
            return "timed out"
        except (GoEnhanceError, concurrent.futures.CancelledError):
            continue  # counted as failed / not watching by the tally
    return "done"


def show_summary(line: str, handle: Any, *, klass: str = "goenhance-jobs-summary") -> None:
    """The static end of a progress display: one line (a regular output in a kernel, replacing
    the live bar when ``handle`` is its display handle; printed outside IPython). ``klass`` is
    the HTML class of the line (the browser suite and users' CSS find it by that)."""
    from IPython import get_ipython
    from IPython.display import display

    if get_ipython() is None:
        print(line)
        return
    bundle = {
        "text/plain": line,
        "text/html": f"<div class='{klass}'>{html.escape(line)}</div>",
    }
    if handle is not None:
        handle.update(bundle, raw=True)
    else:
        display(bundle, raw=True)  # type: ignore[no-untyped-call]
