"""Credits, per-job cost, session spend and the optional budget (DECISIONS 11).

The budget check runs before any API call: it refuses a submission when the session's spend so
far plus the *estimated* cost of the new job would exceed ``Settings.budget``. The estimate is
the last observed cost per second for that model and resolution (persisted in the meta store, so
it survives restarts), else the simulator's published rates (540p 5/s, 720p 10/s, VIP x1.5) —
always labelled as an estimate.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Protocol

from goenhance_nb._errors import BudgetExceeded

__all__ = ["DEFAULT_RATES", "Estimate", "SpendSnapshot", "Usage"]

log = logging.getLogger("goenhance_nb.usage")

DEFAULT_RATES: dict[str, float] = {"540p": 5.0, "720p": 10.0}
VIP_MULTIPLIER = 1.5


class _Meta(Protocol):
    def meta_get(
        self, name: str, *, max_age: float | None = ..., now: float | None = ...
    ) -> object: ...
    def meta_set(self, name: str, value: object, *, now: float | None = ...) -> None: ...


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimated job cost in credits and where the rate came from (``observed``/``default``)."""

    credits: int
    basis: str

    def __str__(self) -> str:
        return f"~{self.credits} credits (estimate, {self.basis} rate)"


@dataclass(frozen=True, slots=True)
class SpendSnapshot:
    """The session's spend at one moment, for display (:meth:`Usage.snapshot`).

    ``spent``: credits counted as spent (``possible`` included); ``possible``: the part of
    ``spent`` whose generate outcome is unknown (it may or may not have been charged); ``jobs``:
    jobs charged this session; ``budget``: the session budget (``None``: no budget);
    ``last_credits``: the last balance seen (``None``: none asked yet); ``maybe_refunded``: the
    part of ``spent`` charged for jobs that then failed, which the service may have refunded
    (the API does not say; README "Credits"): show it as such, never as a refund.
    """

    spent: int
    possible: int
    jobs: int
    budget: int | None
    last_credits: int | None
    maybe_refunded: int = 0

    def __str__(self) -> str:
        """``15``, or with what is uncertain: ``30 (incl. 15 possibly charged; incl. 15 on
        failed jobs, may be refunded)``."""
        notes = []
        if self.possible:  # generate outcomes unknown: counted as spent until known
            notes.append(f"incl. {self.possible} possibly charged")
        if self.maybe_refunded:
            notes.append(f"incl. {self.maybe_refunded} on failed jobs, may be refunded")
        return f"{self.spent} ({'; '.join(notes)})" if notes else str(self.spent)


class Usage:
    """Session spend and cost history. Thread-safe.

    ``spent`` counts credits charged by jobs this session submitted (the real ``cost`` from the
    generate response when given, else the estimate), plus, pessimistically, the estimate of
    every generate POST whose outcome is unknown (the server may have charged it; DECISIONS 25):
    ``possible`` is that part of ``spent``. The budget check counts both. ``last_credits`` is
    the last balance seen.
    """

    def __init__(self, meta: _Meta | None = None, *, budget: int | None = None) -> None:
        self._meta = meta
        self.budget = budget
        self.spent = 0
        self.jobs = 0
        self.possible = 0
        self.maybe_refunded = 0
        self.last_credits: int | None = None
        self._lock = threading.Lock()
        self._reserved = 0

    def estimate(
        self, model: int, resolution: str, duration: int, *, is_vip: bool = False
    ) -> Estimate:
        """Return the estimated cost of a job (see module docstring)."""
        rate: float | None = None
        basis = "default"
        if self._meta is not None:
            obs = self._meta.meta_get(f"rate:{model}:{resolution}")
            if isinstance(obs, (int, float)) and obs >= 0:
                rate, basis = float(obs), "observed"
        if rate is None:
            rate = DEFAULT_RATES.get(resolution, max(DEFAULT_RATES.values()))
            if is_vip:
                rate *= VIP_MULTIPLIER
        return Estimate(math.ceil(math.ceil(duration) * rate - 1e-9), basis)

    def reserve(self, est: Estimate) -> None:
        """Check the budget for a job estimated at ``est`` and reserve it until :meth:`record`
        or :meth:`release`.

        :raises BudgetExceeded: when spend + reserved + estimate would exceed the budget.
        """
        with self._lock:
            if self.budget is not None and self.spent + self._reserved + est.credits > self.budget:
                raise BudgetExceeded(
                    f"budget of {self.budget} credits would be exceeded: spent {self.spent}, "
                    f"pending {self._reserved}, this job {est}"
                )
            self._reserved += est.credits

    def release(self, est: Estimate) -> None:
        """Drop a reservation made by :meth:`reserve` (the job was not submitted)."""
        with self._lock:
            self._reserved = max(0, self._reserved - est.credits)

    def record(
        self, est: Estimate, cost: int | None, *, model: int, resolution: str, duration: int
    ) -> None:
        """Turn a reservation into spend: ``cost`` when the API reported it (also remembered
        as the observed rate for model+resolution, best effort: a failed write is logged),
        else the estimate."""
        with self._lock:
            self._reserved = max(0, self._reserved - est.credits)
            self.spent += est.credits if cost is None else int(cost)
            self.jobs += 1
        if cost is not None and self._meta is not None and duration > 0:
            try:
                self._meta.meta_set(f"rate:{model}:{resolution}", cost / math.ceil(duration))
            except Exception as exc:  # a hint for later estimates: never fails a paid job
                log.warning("goenhance_nb: could not remember the observed rate (%s)", exc)

    def record_failed(self, cost: int | None) -> None:
        """A job charged ``cost`` credits this session failed on the server. The API does not
        say whether the service refunds a failed job, so the charge stays in ``spent`` (the
        budget keeps counting it) and is also counted in ``maybe_refunded``, which views show
        as "may be refunded by the service". ``None`` or 0 (nothing known) changes nothing.
        """
        if not cost:
            return
        with self._lock:
            self.maybe_refunded = min(self.spent, self.maybe_refunded + int(cost))

    def record_possible(self, est: Estimate) -> None:
        """Turn a reservation into possible spend: the generate POST's outcome is unknown, so
        the job may have been charged. Counted in ``spent`` (and ``possible``) until known."""
        with self._lock:
            self._reserved = max(0, self._reserved - est.credits)
            self.spent += est.credits
            self.possible += est.credits

    def carry_over(self, previous: Usage) -> None:
        """Continue ``previous`` (the usage of the session this one replaces): add its spend,
        job count and open reservations, and take its last seen balance, so a settings change
        or a login never resets what the budget counts. The budget is not copied (the new
        session's settings carry it)."""
        with previous._lock:
            spent, jobs, reserved = previous.spent, previous.jobs, previous._reserved
            last = previous.last_credits
        with self._lock:
            self.spent += spent
            self.jobs += jobs
            self._reserved += reserved
            if self.last_credits is None:
                self.last_credits = last

    def snapshot(self) -> SpendSnapshot:
        """Return the spend, possible spend, job count, budget and last balance, read together
        under the lock (see :class:`SpendSnapshot`)."""
        with self._lock:
            return SpendSnapshot(
                spent=self.spent,
                possible=self.possible,
                jobs=self.jobs,
                budget=self.budget,
                last_credits=self.last_credits,
                maybe_refunded=self.maybe_refunded,
            )
