"""Suppression rules and the tracking-consent gate, as pure per-subscriber state.

Rules (reason → scope; ``since`` is an event time):

    complaint     spam complaint               scope "all"        since = first complaint
    hard_bounce   bounce_class "hard"          scope "all"        since = first hard bounce
    soft_bounces  ≥ N soft bounces within W    scope "all"        since = earliest time the
                  (default 3 within 7 days)                       N-th bounce of a run landed
    unsubscribe   unsubscribe event, or a      scope "marketing"  since = first unsubscribe
                  profile withdrawing                             after the last re-subscribe
                  marketing consent

Only an unsubscribe can be lifted, by a re-subscribe (marketing consent granted in
``subscriber.profiles``) at a time ≥ the unsubscribe; an unsubscribe at the same millisecond
as a re-subscribe wins, because mailing someone who opted out is the worse error.
Complaints and bounces are never lifted here: they describe the mailbox, not a preference,
and re-subscribing does not make a dead address deliverable.  A bounce with an unknown
class counts as soft (only a hard bounce is proof of a permanent failure).  Unsubscribes
flagged ``suspected_bot`` are still honoured: an opt-out must not be second-guessed.

When several reasons hold, ``status()`` reports one primary reason by severity
(complaint > hard_bounce > soft_bounces > unsubscribe) and lists all active reasons.

Order-independence: first-times are minima; the unsubscribe/re-subscribe pair keeps the
latest re-subscribe (a max) and the unsubscribe times at or after it, so the result is the
same for any arrival order.  Soft bounces keep their times inside a horizon of
``window + lateness`` before the newest soft bounce; the result is order-independent for
every soft bounce that arrives at most ``soft_bounce_lateness_days`` behind the newest one
already seen (the state stays bounded; older stragglers are only matched against what is
still kept).  The soft-bounce window is inclusive: N bounces with last − first ≤ W fire.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from udfs.scoring import MS_PER_DAY, _is_int, _is_number

REASON_PRIORITY = ("complaint", "hard_bounce", "soft_bounces", "unsubscribe")
SCOPES = {
    "complaint": "all",
    "hard_bounce": "all",
    "soft_bounces": "all",
    "unsubscribe": "marketing",
}

# Event types that come from our tracking pixel and link wrapper (or are attributed through
# them); withdrawn tracking consent stops exactly these from feeding scores and send hours.
TRACKING_DERIVED_TYPES = frozenset({"open", "click", "conversion"})


@dataclass(frozen=True)
class SuppressionParams:
    soft_bounce_threshold: int = 3
    soft_bounce_window_days: float = 7.0
    # How far behind the newest soft bounce a straggler may arrive and still be matched
    # exactly; bounds the kept soft-bounce times to window + lateness.
    soft_bounce_lateness_days: float = 30.0

    def __post_init__(self) -> None:
        if not _is_int(self.soft_bounce_threshold) or self.soft_bounce_threshold < 1:
            raise ValueError("soft_bounce_threshold must be an int >= 1")
        for name in ("soft_bounce_window_days", "soft_bounce_lateness_days"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")

    @property
    def window_ms(self) -> int:
        return round(self.soft_bounce_window_days * MS_PER_DAY)

    @property
    def horizon_ms(self) -> int:
        return round((self.soft_bounce_window_days + self.soft_bounce_lateness_days) * MS_PER_DAY)


@dataclass(frozen=True)
class Suppression:
    """Active suppression: primary reason, its scope and since, plus all active reasons."""

    reason: str
    scope: str
    since: int
    reasons: tuple[tuple[str, int], ...]  # (reason, since) in priority order

    def blocks(self, mail_class: str = "marketing") -> bool:
        """Whether mail of ``mail_class`` ("marketing" or "transactional") is blocked."""
        return any(SCOPES[r] == "all" or mail_class == "marketing" for r, _ in self.reasons)


def _min(a: int | None, b: int) -> int:
    return b if a is None or b < a else a


class SuppressionState:
    """Keyed suppression state of one subscriber."""

    __slots__ = (
        "complaint_since",
        "hard_bounce_since",
        "params",
        "resubscribed_at",
        "soft_bounce_since",
        "soft_bounce_times",
        "unsubscribe_times",
    )

    def __init__(self, params: SuppressionParams | None = None) -> None:
        self.params = params or SuppressionParams()
        self.complaint_since: int | None = None
        self.hard_bounce_since: int | None = None
        self.soft_bounce_since: int | None = None
        self.soft_bounce_times: list[int] = []  # sorted, pruned to the horizon
        self.resubscribed_at: int | None = None  # latest re-subscribe
        self.unsubscribe_times: list[int] = []  # sorted, all ≥ resubscribed_at

    def add(self, event: Mapping[str, Any]) -> bool:
        """Apply one EmailEvent-shaped mapping; return whether it was a suppression event."""
        et = event.get("event_type")
        if et not in ("complaint", "bounce", "unsubscribe"):
            return False
        t = event.get("event_time")
        if not _is_int(t):
            raise ValueError(f"event_time must be integer epoch milliseconds, got {t!r}")
        if et == "complaint":
            self.complaint_since = _min(self.complaint_since, t)
        elif et == "unsubscribe":
            self.unsubscribe(t)
        elif event.get("bounce_class") == "hard":
            self.hard_bounce_since = _min(self.hard_bounce_since, t)
        else:
            self._add_soft_bounce(t)
        return True

    def unsubscribe(self, t: int) -> None:
        if self.resubscribed_at is not None and t < self.resubscribed_at:
            return  # already lifted by a later re-subscribe
        bisect.insort(self.unsubscribe_times, t)

    def resubscribe(self, t: int) -> None:
        """A re-subscribe at ``t`` lifts unsubscribes strictly before ``t`` (only those)."""
        if self.resubscribed_at is not None and t <= self.resubscribed_at:
            return
        self.resubscribed_at = t
        self.unsubscribe_times = [u for u in self.unsubscribe_times if u >= t]

    def apply_consent(self, marketing_consent: bool | None, t: int) -> None:
        """Profile consent change at ``t``: granted = re-subscribe, withdrawn = unsubscribe."""
        if not _is_int(t):
            raise ValueError(f"consent time must be integer epoch milliseconds, got {t!r}")
        if marketing_consent is True:
            self.resubscribe(t)
        elif marketing_consent is False:
            self.unsubscribe(t)

    def _add_soft_bounce(self, t: int) -> None:
        times = self.soft_bounce_times
        newest = max(times[-1], t) if times else t
        if t < newest - self.params.horizon_ms:
            return  # too late to be matched exactly; its partners are already pruned
        bisect.insort(times, t)
        # Only runs that include t can be new; scan the sorted neighbourhood of t.
        k, w = self.params.soft_bounce_threshold, self.params.window_ms
        i = bisect.bisect_left(times, t)
        for start in range(max(0, i - k + 1), min(i, len(times) - k) + 1):
            end = start + k - 1
            if times[end] - times[start] <= w:
                self.soft_bounce_since = _min(self.soft_bounce_since, times[end])
        cutoff = newest - self.params.horizon_ms
        if times[0] < cutoff:
            del times[: bisect.bisect_left(times, cutoff)]

    def reasons(self) -> dict[str, int]:
        active: dict[str, int] = {}
        if self.complaint_since is not None:
            active["complaint"] = self.complaint_since
        if self.hard_bounce_since is not None:
            active["hard_bounce"] = self.hard_bounce_since
        if self.soft_bounce_since is not None:
            active["soft_bounces"] = self.soft_bounce_since
        if self.unsubscribe_times:
            active["unsubscribe"] = self.unsubscribe_times[0]
        return active

    def status(self) -> Suppression | None:
        """The current suppression, or None (emit a tombstone/DELETE when it becomes None)."""
        active = self.reasons()
        if not active:
            return None
        ordered = tuple((r, active[r]) for r in REASON_PRIORITY if r in active)
        reason, since = ordered[0]
        return Suppression(reason, SCOPES[reason], since, ordered)

    def to_tuple(self) -> tuple[Any, ...]:
        """Compact form for Flink keyed state (parameters are not stored)."""
        return (
            self.complaint_since,
            self.hard_bounce_since,
            self.soft_bounce_since,
            tuple(self.soft_bounce_times),
            self.resubscribed_at,
            tuple(self.unsubscribe_times),
        )

    @classmethod
    def from_tuple(
        cls, data: tuple[Any, ...], params: SuppressionParams | None = None
    ) -> SuppressionState:
        state = cls(params)
        (
            state.complaint_since,
            state.hard_bounce_since,
            state.soft_bounce_since,
            soft,
            state.resubscribed_at,
            unsub,
        ) = data
        state.soft_bounce_times, state.unsubscribe_times = sorted(soft), sorted(unsub)
        return state


def tracking_allows(tracking_consent: bool | None, unknown_allows: bool = True) -> bool:
    """Whether tracking data may be used; None (no profile/flag yet) → ``unknown_allows``."""
    return unknown_allows if tracking_consent is None else bool(tracking_consent)


def feeds_engagement(
    event: Mapping[str, Any], tracking_consent: bool | None, unknown_allows: bool = True
) -> bool:
    """Whether ``event`` may feed the engagement score and the send-time histogram.

    With tracking consent withdrawn, opens, clicks and conversions (tracking-derived) are
    dropped; deliveries, bounces, complaints and unsubscribes come from the mail system,
    not from tracking, so they still count (and suppression always applies).
    """
    if event.get("event_type") not in TRACKING_DERIVED_TYPES:
        return True
    return tracking_allows(tracking_consent, unknown_allows)
