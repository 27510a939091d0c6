"""Best send hour per subscriber (reference: ab-testing-and-scoring.md, Part B4).

A decayed hour-of-week histogram of the subscriber's *human* engagement (opens that are not
machine opens, clicks, conversions), read as follows at time t:

1. decay every slot to t (half-life H) → c[s];  H_u = Σ c  ("effective events");
2. if H_u < min_events, fall back to the population distribution π (too little signal);
3. else shrink toward the population: q[s] = (c[s] + m·π[s]) / (H_u + m);
4. smooth circularly over neighbouring hours: q̃[s] = ¼q[s−1] + ½q[s] + ¼q[s+1] (wraps);
5. best slot = argmax q̃ over the allowed slots (ties → lowest slot).

The fallback uses π unsmoothed: it is aggregated over many subscribers, so it needs no
smoothing, and this is what the reference's worked example E9 does.

The population π is ``SendTimeParams.population``, a configured curve
(``subscriber.send_time.population``), by default ``REFERENCE_HOURLY_POPULATION``: the
reference's hour-of-day engagement curve (E9: night trough, peak 08:00, second peak
20:00).  A 24-value curve is repeated over the seven days of a 168-slot histogram, so the
fallback is 08:00 local time, on Monday (equal days tie, and ties go to the lowest slot);
a 168-value curve gives each weekday its own shape.  ``population=None`` means uniform
(then the fallback is slot 0, Monday 00:00, which is why it is not the default).

Why a configured curve and not a population histogram aggregated live inside the job:
every subscriber key would need the population, i.e. a broadcast (or a second aggregated
stream joined back), and the rows computed from it would then depend on how that stream
interleaves with the keyed events, unless it were versioned by event time, and every
fallback subscriber would need re-emitting whenever it moves.  A curve that changes
slowly is better recomputed offline from the data and put in the config:
``SendTimeState.population_distribution`` (fed all subscribers' events, or ``merge``d
subscriber states) gives the curve to paste, with the same decay and weights as the job.
This keeps the job's output a function of its own inputs, in any arrival order.

Confidence = the posterior-predictive probability that the subscriber's next human
engagement falls within ±``confidence_window`` slots of the chosen slot, i.e. Σ q over that
window (π over that window on fallback).  It is low both when there is little data (q is
mostly the population) and when the subscriber engages at scattered hours, which are the
two cases where a campaign tool should prefer its default time.

Slots: slot = weekday·24 + hour of the *local wall clock* (Monday 00:00–00:59 = slot 0) in
the subscriber's IANA time zone, UTC when none is given or the name is unknown.  Keying by
wall-clock hour keeps a 09:00 reader in slot 9 across DST changes.  With ``slots=24`` the
histogram is hour-of-day only (the reference's option for sparse data).

State and order-independence: like ``udfs.scoring``, the histogram is re-based to the
latest event time seen, and each event is decayed from its own time to that reference, so
the state after any arrival order is the same set of decayed terms (up to last-bit float
rounding; near-ties in the argmax are broken by a relative tolerance so that rounding
noise cannot flip the chosen slot).  The population histogram can be accumulated with the
same class (``merge`` of subscribers' states, or ``add`` of every subscriber's events).

Not covered here (sender's side): exposure normalisation by sends per slot and the 5–10 %
exploration draw from π described in B4 steps 4 and 6.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from udfs.scoring import MS_PER_DAY, _is_int, _is_number, _rebuild, decay, is_human_engagement

HOURS_PER_WEEK = 168
OUTPUT_DECIMALS = 6
# Relative tolerance within which two smoothed slot values count as tied.
TIE_TOLERANCE = 1e-9

DEFAULT_SEND_TIME_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"click": 1.0, "open": 0.5, "conversion": 1.0}
)

# Typical share of human engagement per local hour of day (0..23), from the reference
# (ab-testing-and-scoring.md, example E9; sums to 1.01, normalised on use).  The default
# population prior; argmax = 08:00.
# fmt: off
REFERENCE_HOURLY_POPULATION: tuple[float, ...] = (
    0.010, 0.006, 0.004, 0.003, 0.003, 0.006, 0.020, 0.050, 0.080, 0.075, 0.065, 0.060,
    0.065, 0.060, 0.050, 0.045, 0.045, 0.050, 0.055, 0.065, 0.070, 0.060, 0.040, 0.023,
)
# fmt: on

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SendTimeParams:
    """Send-time parameters; ``weights`` are merged over ``DEFAULT_SEND_TIME_WEIGHTS``."""

    half_life_days: float = 45.0
    slots: int = HOURS_PER_WEEK  # 168 = hour of week, 24 = hour of day
    pseudo_events: float = 3.0  # m: weight of the population prior
    min_events: float = 3.0  # below this many effective events → population fallback
    kernel: tuple[float, ...] = (0.25, 0.5, 0.25)  # centred, odd length, circular
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SEND_TIME_WEIGHTS)
    confidence_window: int = 1  # ± slots counted into the confidence
    default_time_zone: str = "UTC"
    emit_confidence_epsilon: float = 0.05
    # π: 24 (hour of day) or 168 (hour of week) non-negative numbers, any scale; None =
    # uniform.  See the module docstring for why it is configured.
    population: tuple[float, ...] | None = REFERENCE_HOURLY_POPULATION

    def __post_init__(self) -> None:
        merged = dict(DEFAULT_SEND_TIME_WEIGHTS)
        if not isinstance(self.weights, Mapping):
            raise ValueError("weights must be a mapping of event type to number")
        for key, w in self.weights.items():
            if not isinstance(key, str) or not _is_number(w) or w < 0:
                raise ValueError(f"weight for {key!r} must be a finite number >= 0, got {w!r}")
            merged[key] = float(w)
        object.__setattr__(self, "weights", MappingProxyType(merged))
        object.__setattr__(self, "kernel", tuple(float(k) for k in self.kernel))
        for name in ("half_life_days", "pseudo_events", "min_events", "emit_confidence_epsilon"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.half_life_days <= 0:
            raise ValueError("half_life_days must be > 0")
        if self.slots not in (24, HOURS_PER_WEEK):
            raise ValueError(f"slots must be 24 or 168, got {self.slots!r}")
        k = self.kernel
        if len(k) % 2 != 1 or len(k) > self.slots or any(not _is_number(x) or x < 0 for x in k):
            raise ValueError(f"kernel must be an odd-length sequence of weights >= 0, got {k!r}")
        if sum(k) <= 0:
            raise ValueError("kernel weights must not all be 0")
        if not _is_int(self.confidence_window) or not 0 <= self.confidence_window < self.slots:
            raise ValueError("confidence_window must be an int in [0, slots)")
        if resolve_zone(self.default_time_zone, None) is None:
            raise ValueError(f"unknown default_time_zone {self.default_time_zone!r}")
        pop = self.population
        if pop is not None:
            if isinstance(pop, str | bytes) or not isinstance(pop, Sequence):
                raise ValueError(f"population must be a list of numbers or None, got {pop!r}")
            if any(not _is_number(x) for x in pop):
                raise ValueError("population counts must be finite numbers")
            pop = tuple(float(x) for x in pop)
            object.__setattr__(self, "population", pop)
        # Normalised once (validates too): every row read uses it.  Not a dataclass field,
        # so equality, hashing and pickling go by ``population`` alone.
        object.__setattr__(self, "_pi", tuple(normalize_population(pop, self.slots)))

    def __hash__(self) -> int:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["weights"] = tuple(sorted(self.weights.items()))
        return hash(tuple(values.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        # Flink pickles UDFs with their parameters; a mappingproxy cannot be pickled.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["weights"] = dict(self.weights)
        return (_rebuild, (type(self), values))

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * MS_PER_DAY

    @property
    def population_distribution(self) -> tuple[float, ...]:
        """The configured π, normalised to ``slots`` values summing to 1."""
        return self._pi  # type: ignore[attr-defined]


@lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo | None:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def resolve_zone(name: str | None, default: str | None = "UTC") -> tzinfo | None:
    """The tzinfo for an IANA name; a missing/unknown name gives ``default``'s zone.

    Profiles carry free-text time zones, so a bad one must degrade to the default rather
    than stop the job.  With ``default=None`` an unknown name returns None.
    """
    if isinstance(name, str) and name:
        zone = _zone(name)
        if zone is not None:
            return zone
    return None if default is None else _zone(default)


def slot_of(
    event_time_ms: int,
    time_zone: str | None = None,
    slots: int = HOURS_PER_WEEK,
    default_time_zone: str = "UTC",
) -> int:
    """Local wall-clock slot: weekday·24 + hour (Monday 00h = 0), or hour only if slots=24."""
    zone = resolve_zone(time_zone, default_time_zone) or UTC
    # Integer timedelta arithmetic avoids float rounding of ms timestamps near hour edges.
    local = (_EPOCH + timedelta(milliseconds=event_time_ms)).astimezone(zone)
    if slots == 24:
        return local.hour
    return local.weekday() * 24 + local.hour


def normalize_population(population: Sequence[float] | None, slots: int) -> list[float]:
    """π as a probability vector of length ``slots``.

    None or an all-zero histogram → uniform; a 24-hour histogram is repeated over the seven
    days when 168 slots are needed, and a 168-slot one is summed per hour of day when 24
    are (so either form of the configured curve fits either histogram).
    """
    if population is None:
        return [1.0 / slots] * slots
    pop = [float(x) for x in population]
    if len(pop) == 24 and slots == HOURS_PER_WEEK:
        pop = pop * 7
    elif len(pop) == HOURS_PER_WEEK and slots == 24:
        pop = [math.fsum(pop[h::24]) for h in range(24)]
    if len(pop) != slots:
        raise ValueError(f"population has {len(pop)} slots, expected {slots}")
    if any(not math.isfinite(x) or x < 0 for x in pop):
        raise ValueError("population counts must be finite and >= 0")
    total = math.fsum(pop)
    if total <= 0:
        return [1.0 / slots] * slots
    return [x / total for x in pop]


def smooth(q: Sequence[float], kernel: Sequence[float]) -> list[float]:
    """Circular convolution with a centred kernel (hour 167 neighbours hour 0)."""
    n, half = len(q), len(kernel) // 2
    return [
        math.fsum(kernel[j] * q[(s + j - half) % n] for j in range(len(kernel))) for s in range(n)
    ]


def _argmax(values: Sequence[float], allowed: Iterable[int]) -> int:
    candidates = list(allowed)
    top = max(values[s] for s in candidates)
    tol = TIE_TOLERANCE * abs(top)
    return min(s for s in candidates if values[s] >= top - tol)


@dataclass(frozen=True)
class SendTimeResult:
    """Best slot for one subscriber as of ``as_of`` (floats rounded for output)."""

    slot: int
    weekday: int | None  # 0 = Monday; None for hour-of-day histograms
    hour: int
    confidence: float
    source: str  # "subscriber" or "population"
    effective_events: float
    value: float  # smoothed q̃ (or π on fallback) at the chosen slot
    as_of: int | None


def choose_slot(
    counts: Sequence[float],
    params: SendTimeParams,
    population: Sequence[float] | None = None,
    allowed: Iterable[int] | None = None,
    as_of: int | None = None,
) -> SendTimeResult:
    """Steps 2–5 of the module docstring on counts already decayed to ``as_of``.

    ``population`` overrides the configured ``params.population`` (None = use that).
    """
    n = params.slots
    if len(counts) != n:
        raise ValueError(f"counts has {len(counts)} slots, expected {n}")
    pi = params.population_distribution if population is None else (
        normalize_population(population, n))
    if allowed is None:
        allowed_slots = list(range(n))
    else:
        allowed_slots = sorted(set(allowed))
        if not allowed_slots or any(not _is_int(s) or not 0 <= s < n for s in allowed_slots):
            raise ValueError(f"allowed must be a non-empty set of slots in [0, {n})")
    h_u = math.fsum(counts)
    if h_u < params.min_events or h_u <= 0:
        q, q_smoothed, source = pi, pi, "population"
    else:
        m = params.pseudo_events
        q = [(c + m * p) / (h_u + m) for c, p in zip(counts, pi, strict=True)]
        q_smoothed, source = smooth(q, params.kernel), "subscriber"
    best = _argmax(q_smoothed, allowed_slots)
    w = params.confidence_window
    confidence = math.fsum(q[(best + k) % n] for k in range(-w, w + 1))
    return SendTimeResult(
        slot=best,
        weekday=None if n == 24 else best // 24,
        hour=best % 24,
        confidence=round(min(confidence, 1.0), OUTPUT_DECIMALS),
        source=source,
        effective_events=round(h_u, OUTPUT_DECIMALS),
        value=round(q_smoothed[best], OUTPUT_DECIMALS),
        as_of=as_of,
    )


def should_emit_send_time(
    prev: SendTimeResult | None, new: SendTimeResult, params: SendTimeParams
) -> bool:
    """Emit when the chosen slot or its source changes, or confidence moves by ≥ epsilon.

    ``prev`` must be the last *emitted* result, so slow drift is eventually emitted.
    """
    if prev is None or prev.slot != new.slot or prev.source != new.source:
        return True
    return abs(new.confidence - prev.confidence) >= params.emit_confidence_epsilon


class SendTimeState:
    """Keyed state of one subscriber: decayed slot counts re-based to the latest event."""

    __slots__ = ("counts", "params", "ref_time")

    def __init__(self, params: SendTimeParams | None = None) -> None:
        self.params = params or SendTimeParams()
        self.counts = [0.0] * self.params.slots  # decayed to ref_time
        self.ref_time: int | None = None

    @property
    def is_empty(self) -> bool:
        return self.ref_time is None

    def _rebase(self, t: int) -> None:
        if self.ref_time is None:
            self.ref_time = t
        elif t > self.ref_time:
            f = decay(t - self.ref_time, self.params.half_life_ms)
            self.counts = [c * f for c in self.counts]
            self.ref_time = t

    def add_at_slot(self, slot: int, weight: float, event_time: int) -> None:
        """Add ``weight`` at ``slot`` for an event at ``event_time`` (any arrival order)."""
        if not 0 <= slot < self.params.slots:
            raise ValueError(f"slot {slot} out of range [0, {self.params.slots})")
        if not _is_int(event_time):
            raise ValueError(f"event_time must be integer epoch milliseconds, got {event_time!r}")
        self._rebase(event_time)
        assert self.ref_time is not None
        self.counts[slot] += weight * decay(self.ref_time - event_time, self.params.half_life_ms)

    def add(self, event: Mapping[str, Any], time_zone: str | None = None) -> bool:
        """Count a human engagement event in its local slot; return whether it counted.

        Everything else (machine opens, bots, deliveries, bounces) is ignored, as is any
        type without a positive weight.
        """
        if not is_human_engagement(event):
            return False
        weight = self.params.weights.get(event.get("event_type"), 0.0)
        if weight <= 0:
            return False
        t = event.get("event_time")
        if not _is_int(t):
            raise ValueError(f"event_time must be integer epoch milliseconds, got {t!r}")
        slot = slot_of(t, time_zone, self.params.slots, self.params.default_time_zone)
        self.add_at_slot(slot, weight, t)
        return True

    def merge(self, other: SendTimeState) -> None:
        """Add another histogram (a partial state, or a subscriber into a population)."""
        if other.ref_time is None:
            return
        if len(other.counts) != len(self.counts):
            raise ValueError("cannot merge histograms with different slot counts")
        self._rebase(other.ref_time)
        assert self.ref_time is not None
        f = decay(self.ref_time - other.ref_time, self.params.half_life_ms)
        self.counts = [a + b * f for a, b in zip(self.counts, other.counts, strict=True)]

    def counts_at(self, t: int) -> list[float]:
        """Slot counts decayed to ``t`` (t must not precede the latest event)."""
        if self.ref_time is None:
            return [0.0] * self.params.slots
        if t < self.ref_time:
            raise ValueError(
                f"cannot read the histogram at {t}: it holds events up to {self.ref_time}"
            )
        f = decay(t - self.ref_time, self.params.half_life_ms)
        return [c * f for c in self.counts]

    def best(
        self,
        as_of: int | None = None,
        population: Sequence[float] | None = None,
        allowed: Iterable[int] | None = None,
    ) -> SendTimeResult:
        """Best slot as of ``as_of`` (default: latest event), optionally within ``allowed``."""
        if as_of is None:
            as_of = self.ref_time
        counts = self.counts_at(as_of) if as_of is not None else [0.0] * self.params.slots
        return choose_slot(counts, self.params, population, allowed, as_of)

    def population_distribution(self, as_of: int | None = None) -> list[float]:
        """Use this state as the population: its normalised decayed histogram."""
        t = self.ref_time if as_of is None else as_of
        counts = self.counts_at(t) if t is not None else [0.0] * self.params.slots
        return normalize_population(counts, self.params.slots)

    def to_tuple(self) -> tuple[int | None, tuple[float, ...]]:
        """Compact form for Flink keyed state (parameters are not stored)."""
        return (self.ref_time, tuple(self.counts))

    @classmethod
    def from_tuple(
        cls, data: tuple[int | None, Sequence[float]], params: SendTimeParams | None = None
    ) -> SendTimeState:
        state = cls(params)
        ref_time, counts = data
        if len(counts) != state.params.slots:
            raise ValueError(f"stored histogram has {len(counts)} slots")
        state.ref_time, state.counts = ref_time, [float(c) for c in counts]
        return state
