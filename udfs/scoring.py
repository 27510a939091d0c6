"""Per-subscriber engagement score: an exponentially decayed weighted event sum.

    S(t) = Σ wᵢ · 2^(−(t − tᵢ)/H)        (reference: ab-testing-and-scoring.md, Part B2)

State design (why arrival order does not matter)
------------------------------------------------
The reference's update ``S ← S·2^(−(t − t_last)/H) + w`` assumes events arrive in event-time
order: a late event would be decayed from the wrong origin.  Here the state is a *re-based*
decayed sum ``(value, ref_time)`` meaning ``S(ref_time) = value``, where ``ref_time`` is the
largest event time seen so far.  Adding an event at time t with weight w is

    r' = max(r, t);   value' = value · 2^(−(r' − r)/H) + w · 2^(−(r' − t)/H)

which is exactly Σ wᵢ·2^(−(r' − tᵢ)/H) for any order, because every term is decayed from its
own event time to the common reference, and max() is order-independent.  All exponents are
≤ 0, so nothing can overflow: very old terms underflow to 0.0 (their true contribution is
below double precision anyway), and ``value`` stays bounded by Σ|wᵢ| however long the state
lives.  Re-basing on every advance of the reference is the "periodic re-base" in its simplest
form; the same two-column state and formula can be written as a Flink SQL aggregate.

Floating-point addition is not associative, so two arrival orders can differ in the last
unit of precision (~1e-16 relative).  Every output (the command, ``ScoreOutput``) therefore
rounds the score to ``SCORE_DECIMALS`` places, and ``should_emit`` ignores changes below an
epsilon, so that noise never surfaces.

The other state fields are order-independent for the same reason: the last human
engagement time is a max, and the first hard bounce / complaint time is a min.

Weights (``DEFAULT_WEIGHTS``) come from Part B2.  Bounces are split into ``bounce_hard`` and
``bounce_soft`` by ``bounce_class``; an unknown class counts as soft, because only a hard
bounce is evidence that the address is permanently gone.  Machine (Apple MPP) opens and
engagement flagged ``suspected_bot`` weigh 0 and do not count as human engagement; an open
with ``machine_open`` null (unknown) counts as human, since detectors flag the machine opens
they recognise.  Event types absent from the weight table weigh 0.

Tiers (first rule that matches wins; thresholds in ``ScoringParams``):

    unreachable  a hard bounce or spam complaint was seen, or the caller says the subscriber
                 is suppressed (the subscriber job passes its suppression state, which also
                 covers unsubscribes and repeated soft bounces)
    engaged      S ≥ engaged_min_score and human engagement within engaged_max_days
    active       S ≥ active_min_score  and human engagement within active_max_days
    at_risk      human engagement within at_risk_max_days
    dormant      otherwise (including never engaged)

Run ``python -m udfs.scoring FILE`` to score a JSON file (see ``main``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

MS_PER_DAY = 86_400_000

# Outputs are rounded so that last-bit float differences between arrival orders never show.
SCORE_DECIMALS = 6

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "sent": 0.0,
        "delivered": 0.0,
        "deferred": 0.0,
        "dropped": 0.0,
        "open": 1.0,  # human opens only; machine opens are forced to 0
        "click": 3.0,
        "reply": 5.0,
        "conversion": 10.0,
        "bounce_soft": -1.0,
        "bounce_hard": -10.0,
        "unsubscribe": -10.0,
        "complaint": -25.0,
    }
)

# Event types that only a person (not the mail system) produces; bots and machine opens
# are excluded from these.
ENGAGEMENT_TYPES = frozenset({"open", "click", "reply", "conversion"})

TIERS = ("engaged", "active", "at_risk", "dormant", "unreachable")


def _is_number(x: object) -> bool:
    # bool is an int subclass; a JSON `true` weight is a mistake, not 1.0.
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class ScoringParams:
    """Score parameters. ``weights`` are merged over ``DEFAULT_WEIGHTS``.

    Merging (rather than replacing) means a config that only retunes clicks keeps the
    negative weights that suppression-worthy events must have; set a type to 0 to ignore
    it.  A ``bounce`` key sets both ``bounce_hard`` and ``bounce_soft`` unless those are
    given explicitly.
    """

    half_life_days: float = 30.0
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    engaged_min_score: float = 5.0
    engaged_max_days: float = 30.0
    active_min_score: float = 1.0
    active_max_days: float = 90.0
    at_risk_max_days: float = 180.0
    # Emit when the tier changes or |Δscore| ≥ max(abs, rel·|previous score|).
    emit_abs_epsilon: float = 0.5
    emit_rel_epsilon: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _merge_weights(self.weights))
        for name in (
            "half_life_days",
            "engaged_min_score",
            "engaged_max_days",
            "active_min_score",
            "active_max_days",
            "at_risk_max_days",
            "emit_abs_epsilon",
            "emit_rel_epsilon",
        ):
            if not _is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0, got {self.half_life_days}")
        # Positive score thresholds make tiers degrade monotonically while no events arrive,
        # which is what next_review_time relies on.
        if not 0 < self.active_min_score <= self.engaged_min_score:
            raise ValueError("need 0 < active_min_score <= engaged_min_score")
        if not 0 <= self.engaged_max_days <= self.active_max_days <= self.at_risk_max_days:
            raise ValueError("need 0 <= engaged_max_days <= active_max_days <= at_risk_max_days")
        if self.emit_abs_epsilon < 0 or self.emit_rel_epsilon < 0:
            raise ValueError("emit epsilons must be >= 0")

    def _field_values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __hash__(self) -> int:
        # The read-only weight table is not hashable by itself.
        values = self._field_values()
        values["weights"] = tuple(sorted(self.weights.items()))
        return hash(tuple(values.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        # Flink pickles UDFs with their parameters, and a mappingproxy cannot be pickled.
        values = self._field_values()
        values["weights"] = dict(self.weights)
        return (_rebuild, (type(self), values))

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * MS_PER_DAY


def _rebuild(cls: type, values: dict[str, Any]) -> Any:
    return cls(**values)


def _merge_weights(overrides: Mapping[str, float]) -> Mapping[str, float]:
    if not isinstance(overrides, Mapping):
        raise ValueError(f"weights must be a mapping of event type to number, got {overrides!r}")
    merged = dict(DEFAULT_WEIGHTS)
    for key, w in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"weight keys must be non-empty strings, got {key!r}")
        if not _is_number(w):
            raise ValueError(f"weight for {key!r} must be a finite number, got {w!r}")
    for key, w in overrides.items():
        if key == "bounce":
            for sub in ("bounce_hard", "bounce_soft"):
                if sub not in overrides:
                    merged[sub] = float(w)
        else:
            merged[key] = float(w)
    return MappingProxyType(merged)


def decay(dt_ms: float, half_life_ms: float) -> float:
    """2^(−dt/H) for dt ≥ 0; underflows quietly to 0.0 for very long gaps."""
    return math.exp2(-dt_ms / half_life_ms)


def weight_key(event_type: str, bounce_class: str | None = None) -> str:
    """The weight-table key of an event: bounces split by class, unknown class = soft."""
    if event_type == "bounce":
        return "bounce_hard" if bounce_class == "hard" else "bounce_soft"
    return event_type


def is_human_engagement(event: Mapping[str, Any]) -> bool:
    """Open/click/reply/conversion that is not a machine open and not flagged as a bot."""
    return (
        event.get("event_type") in ENGAGEMENT_TYPES
        and event.get("machine_open") is not True
        and event.get("suspected_bot") is not True
    )


def is_permanent_failure(event: Mapping[str, Any]) -> bool:
    """Hard bounce or spam complaint: the address must not be mailed again."""
    et = event.get("event_type")
    return et == "complaint" or (et == "bounce" and event.get("bounce_class") == "hard")


def event_weight(event: Mapping[str, Any], params: ScoringParams) -> float:
    et = event.get("event_type")
    if et in ENGAGEMENT_TYPES and not is_human_engagement(event):
        return 0.0
    return params.weights.get(weight_key(et, event.get("bounce_class")), 0.0)


def _event_time(event: Mapping[str, Any]) -> int:
    t = event.get("event_time")
    if not _is_int(t):
        raise ValueError(f"event_time must be integer epoch milliseconds, got {t!r}")
    return t


def round_score(x: float) -> float:
    r = round(x, SCORE_DECIMALS)
    return 0.0 if r == 0 else r  # no "-0.0" in outputs


@dataclass(frozen=True)
class ScoreOutput:
    """What the subscriber job emits for one subscriber (score already rounded)."""

    score: float
    tier: str
    last_human_engagement_time: int | None
    as_of: int


def tier_for(
    score: float,
    last_human_time: int | None,
    as_of: int,
    params: ScoringParams,
    unreachable: bool = False,
) -> str:
    """Tier label; see the module docstring for the rules."""
    if unreachable:
        return "unreachable"
    age_days = math.inf if last_human_time is None else (as_of - last_human_time) / MS_PER_DAY
    if age_days <= params.engaged_max_days and score >= params.engaged_min_score:
        return "engaged"
    if age_days <= params.active_max_days and score >= params.active_min_score:
        return "active"
    if age_days <= params.at_risk_max_days:
        return "at_risk"
    return "dormant"


def should_emit(prev: ScoreOutput | None, new: ScoreOutput, params: ScoringParams) -> bool:
    """True when ``new`` differs enough from the last *emitted* output.

    Compare against the last emitted record (kept in state), not the last computed one:
    otherwise a score drifting by small steps would never be emitted.  A changed last human
    engagement time alone does not emit; it rides along with the next emitted record.
    """
    if prev is None or prev.tier != new.tier:
        return True
    threshold = max(params.emit_abs_epsilon, params.emit_rel_epsilon * abs(prev.score))
    return abs(new.score - prev.score) >= threshold


class ScoreState:
    """Keyed state of one subscriber; see the module docstring for why it is order-free."""

    __slots__ = ("last_human_time", "params", "ref_time", "unreachable_since", "value")

    def __init__(self, params: ScoringParams | None = None) -> None:
        self.params = params or ScoringParams()
        self.value = 0.0  # S(ref_time)
        self.ref_time: int | None = None  # largest event time seen
        self.last_human_time: int | None = None
        self.unreachable_since: int | None = None  # first hard bounce / complaint

    @property
    def is_empty(self) -> bool:
        return self.ref_time is None

    def add_weight(self, weight: float, event_time: int) -> None:
        """Add one decayed term w·2^(−(t_ref − event_time)/H), re-basing if time advances."""
        h = self.params.half_life_ms
        if self.ref_time is None:
            self.value, self.ref_time = float(weight), event_time
        elif event_time > self.ref_time:
            self.value = self.value * decay(event_time - self.ref_time, h) + weight
            self.ref_time = event_time
        else:
            self.value += weight * decay(self.ref_time - event_time, h)

    def add(self, event: Mapping[str, Any]) -> None:
        """Fold one EmailEvent-shaped mapping into the state (any arrival order)."""
        t = _event_time(event)
        self.add_weight(event_weight(event, self.params), t)
        if is_human_engagement(event) and (
            self.last_human_time is None or t > self.last_human_time
        ):
            self.last_human_time = t
        if is_permanent_failure(event) and (
            self.unreachable_since is None or t < self.unreachable_since
        ):
            self.unreachable_since = t

    def merge(self, other: ScoreState) -> None:
        """Combine another partial state of the same subscriber (same formula as add)."""
        if other.ref_time is not None:
            self.add_weight(other.value, other.ref_time)
        if other.last_human_time is not None and (
            self.last_human_time is None or other.last_human_time > self.last_human_time
        ):
            self.last_human_time = other.last_human_time
        if other.unreachable_since is not None and (
            self.unreachable_since is None or other.unreachable_since < self.unreachable_since
        ):
            self.unreachable_since = other.unreachable_since

    def value_at(self, t: int) -> float:
        """S(t) for t ≥ the latest event time seen (0.0 for an empty state)."""
        if self.ref_time is None:
            return 0.0
        if t < self.ref_time:
            # The state already contains events after t; it cannot un-add them.
            raise ValueError(
                f"cannot read the score at {t}: state already holds events up to {self.ref_time}"
            )
        return self.value * decay(t - self.ref_time, self.params.half_life_ms)

    def output(self, as_of: int | None = None, suppressed: bool = False) -> ScoreOutput:
        """Score, tier and last human engagement as of ``as_of`` (default: latest event)."""
        if as_of is None:
            if self.ref_time is None:
                raise ValueError("empty state has no event time; pass as_of")
            as_of = self.ref_time
        score = self.value_at(as_of)
        unreachable = suppressed or (
            self.unreachable_since is not None and self.unreachable_since <= as_of
        )
        tier = tier_for(score, self.last_human_time, as_of, self.params, unreachable)
        return ScoreOutput(round_score(score), tier, self.last_human_time, as_of)

    def next_review_time(self, as_of: int, suppressed: bool = False) -> int | None:
        """Earliest time after ``as_of`` at which the tier can change without new events.

        The job registers an event-time timer there so that a subscriber who goes quiet
        still moves from engaged to active to at_risk to dormant.  None = never.
        """
        p = self.params
        if suppressed or self.unreachable_since is not None or self.ref_time is None:
            return None
        candidates: list[int] = []
        if self.last_human_time is not None:
            for days in (p.engaged_max_days, p.active_max_days, p.at_risk_max_days):
                # Tier rules use "age <= max_days", so the change happens 1 ms later.
                candidates.append(math.floor(self.last_human_time + days * MS_PER_DAY) + 1)
        for threshold in (p.engaged_min_score, p.active_min_score):
            if self.value >= threshold:
                # Solve value·2^(−(t − ref)/H) = threshold; the score drops below after that.
                crossing = self.ref_time + p.half_life_ms * math.log2(self.value / threshold)
                candidates.append(math.floor(crossing) + 1)
        future = [c for c in candidates if c > as_of]
        return min(future) if future else None

    def to_tuple(self) -> tuple[float, int | None, int | None, int | None]:
        """Compact form for Flink keyed state (parameters are not stored)."""
        return (self.value, self.ref_time, self.last_human_time, self.unreachable_since)

    @classmethod
    def from_tuple(
        cls,
        data: tuple[float, int | None, int | None, int | None],
        params: ScoringParams | None = None,
    ) -> ScoreState:
        state = cls(params)
        state.value, state.ref_time, state.last_human_time, state.unreachable_since = data
        state.value = float(state.value)
        return state


def score_events(
    events: Iterable[Mapping[str, Any]], as_of: int, params: ScoringParams | None = None
) -> dict[str, float]:
    """S(as_of) per subscriber, unrounded; events after ``as_of`` are ignored.

    A subscriber whose events all lie after ``as_of`` does not appear: as of then, we had
    not heard of them.
    """
    params = params or ScoringParams()
    states: dict[str, ScoreState] = {}
    for event in events:
        if _event_time(event) > as_of:
            continue
        sid = event["subscriber_id"]
        state = states.get(sid)
        if state is None:
            state = states[sid] = ScoreState(params)
        state.add(event)
    return {sid: state.value_at(as_of) for sid, state in states.items()}


# ---------------------------------------------------------------------------------------
# Command: python -m udfs.scoring FILE
# ---------------------------------------------------------------------------------------


class InputError(ValueError):
    """Bad command input; the message names the offending field."""


_KNOWN_KEYS = frozenset({"half_life_days", "weights", "as_of", "events"})


def parse_input(doc: Any) -> tuple[ScoringParams, int, list[dict[str, Any]]]:
    """Validate the command's JSON document; raise InputError with a field path."""
    if not isinstance(doc, dict):
        raise InputError("top level must be a JSON object")
    unknown = sorted(set(doc) - _KNOWN_KEYS)
    if unknown:
        # A typo such as "halflife_days" would otherwise silently use the default.
        raise InputError(f"unknown top-level key(s): {', '.join(unknown)}")
    if "as_of" not in doc:
        raise InputError("as_of: required (epoch milliseconds)")
    as_of = doc["as_of"]
    if not _is_int(as_of):
        raise InputError(f"as_of: expected integer epoch milliseconds, got {as_of!r}")
    kwargs: dict[str, Any] = {}
    if "half_life_days" in doc:
        h = doc["half_life_days"]
        if not _is_number(h) or h <= 0:
            raise InputError(f"half_life_days: expected a positive number, got {h!r}")
        kwargs["half_life_days"] = float(h)
    if "weights" in doc:
        w = doc["weights"]
        if not isinstance(w, dict):
            raise InputError("weights: expected an object of event type to number")
        for key, value in w.items():
            if not _is_number(value):
                raise InputError(f"weights.{key}: expected a finite number, got {value!r}")
        kwargs["weights"] = w
    try:
        params = ScoringParams(**kwargs)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    events = doc.get("events")
    if not isinstance(events, list):
        raise InputError("events: required, a JSON array of event objects")
    for i, ev in enumerate(events):
        _check_event(i, ev)
    return params, as_of, events


def _check_event(i: int, ev: Any) -> None:
    where = f"events[{i}]"
    if not isinstance(ev, dict):
        raise InputError(f"{where}: expected an object")
    sid = ev.get("subscriber_id")
    if not isinstance(sid, str) or not sid:
        raise InputError(f"{where}.subscriber_id: expected a non-empty string, got {sid!r}")
    et = ev.get("event_type")
    if not isinstance(et, str) or not et:
        raise InputError(f"{where}.event_type: expected a non-empty string, got {et!r}")
    if not _is_int(ev.get("event_time")):
        raise InputError(
            f"{where}.event_time: expected integer epoch milliseconds, got {ev.get('event_time')!r}"
        )
    for flag in ("machine_open", "suspected_bot"):
        if ev.get(flag) is not None and not isinstance(ev[flag], bool):
            raise InputError(f"{where}.{flag}: expected true, false or null, got {ev[flag]!r}")
    bc = ev.get("bounce_class")
    if bc is not None and not isinstance(bc, str):
        raise InputError(f"{where}.bounce_class: expected a string or null, got {bc!r}")


def run(text: str) -> dict[str, Any]:
    """Parse the command's JSON text and return the output object."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}") from exc
    params, as_of, events = parse_input(doc)
    scores = score_events(events, as_of, params)
    return {"scores": {sid: round_score(v) for sid, v in sorted(scores.items())}}


def main(argv: list[str] | None = None) -> int:
    """``python -m udfs.scoring FILE`` (FILE may be ``-`` for stdin); exit 2 on bad input."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(
            "usage: python -m udfs.scoring FILE\n"
            'FILE: {"half_life_days": H, "weights": {type: w}, "as_of": ms, "events": [...]}\n'
            'prints {"scores": {subscriber_id: S(as_of)}}',
            file=sys.stderr,
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    path = args[0]
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        out = run(text)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"error: {path} is not UTF-8: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
