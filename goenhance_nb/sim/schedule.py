"""The job lifecycle as functions of time: queue slots, the next step of a job, its API status.

Pure over :class:`~goenhance_nb.sim.jobs.JobRecord` values (no locks, threads or I/O): the
`Simulator` calls these under its lock and carries out what they decide (start a render, finish
a job and refund).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from goenhance_nb.sim.jobs import JobRecord


@dataclass(frozen=True)
class Finish:
    """The job ends now: `state` at `end` (with `error` when it failed)."""

    state: Literal["success", "failed"]
    end: float
    error: str | None


Step = Literal["wait", "render"] | Finish


def next_step(job: JobRecord, now: float) -> Step:
    """What an active job with a slot needs at `now`: nothing yet (`wait`), its render started
    (`render`), or to finish (:class:`Finish`, never before its planned end nor before its
    render finished; a forced failure ends at the planned end without rendering)."""
    assert job.slot_start is not None, "only jobs with a queue slot advance"
    proc_start = job.slot_start + job.pending_s
    if now < proc_start:
        return "wait"
    planned_end = proc_start + job.processing_s
    if job.forced_fail:
        return Finish("failed", planned_end, "generation failed") if now >= planned_end else "wait"
    render = job.render
    if render.status == "none":
        return "render"
    if now < planned_end or render.status not in ("done", "failed"):
        return "wait"
    end = max(planned_end, render.done_at if render.done_at is not None else planned_end)
    if render.status == "done":
        return Finish("success", end, None)
    return Finish("failed", end, render.error or "generation failed")


def assign_slots(jobs: Iterable[JobRecord], now: float, limit: int) -> bool:
    """Give free queue slots (at most `limit` active per account) to waiting jobs, oldest
    first; a slot starts when the account's last job ended, or at submission, but never after
    `now`. Returns True when any job got a slot."""
    everyone = list(jobs)
    limit = max(1, limit)
    by_acc: dict[str, list[JobRecord]] = {}
    for job in everyone:
        if job.state == "active":
            by_acc.setdefault(job.account, []).append(job)
    changed = False
    for aid, mine in by_acc.items():
        active = sum(1 for j in mine if j.slot_start is not None)
        waiting = sorted((j for j in mine if j.slot_start is None), key=lambda j: j.submitted_at)
        if not waiting or active >= limit:
            continue
        ends = [
            j.end_time
            for j in everyone
            if j.account == aid and j.end_time is not None and j.slot_start is not None
        ]
        last_free = max(ends) if ends else 0.0
        for job in waiting[: limit - active]:
            job.slot_start = min(now, max(job.submitted_at, last_free))
            changed = True
    return changed


def api_status(job: JobRecord, now: float, *, waiting_status: str, success_status: str) -> str:
    """The `status` the jobs/detail endpoint reports for `job` at `now` (before any override):
    the configured success status, `failed`, the configured waiting status (no slot yet),
    `pending` or `processing`."""
    if job.state == "success":
        return success_status
    if job.state == "failed":
        return "failed"
    if job.slot_start is None:
        return waiting_status
    if now < job.slot_start + job.pending_s:
        return "pending"
    return "processing"
