"""YAML cases of the rules (sql/rules/<rule_id>.yaml) and their runner.

A case lists input rows with times and the triggers its rule must produce; `expect: []`
is a case where the rule must not fire. Format (sql/rules/README.md has the details):

    cases:
      - name: open then product click within 5 minutes
        start: 2026-03-02T09:00:00Z          # optional; `at` offsets count from here
        events:                              # clean events; unset fields get defaults
          - {at: 0s, event_type: open, subscriber_id: s1}
          - {at: 3m, event_type: click, subscriber_id: s1, url: https://shop.example/products/p1}
        conversions: []                      # also: profiles, scores
        expect:
          - {subscriber_id: s1, action: push_offer, at: 3m, payload: {product_id: p1}}

All cases of all rules run in ONE Flink job (a MiniCluster job costs seconds): every
case's subscriber ids get a case prefix, so cases never meet in a rule, and every case is
moved to its own stretch of time, so the shared watermark never makes one case's rows
late for another. Outputs are mapped back (prefix removed, time moved back) before they
are compared; a trigger counts for a case only if its rule is the case's rule."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from jobs import avro_schema, rules
from jobs.rules.files import Rule, SqlProblem, display

DEFAULT_START = "2026-01-05T00:00:00Z"  # a Monday, 00:00 UTC
DAY_MS = 86_400_000
# Cases are this far apart in time (plus their own length), in whole weeks so that day
# and week windows line up the same in every case: more than any rule's look-back.
CASE_GAP_MS = 52 * 7 * DAY_MS
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_OFFSET = re.compile(r"^(-?)((?:\d+(?:ms|s|m|h|d))+)$")
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")

# input key in a case -> (input table, Avro schema, time field)
KINDS: dict[str, tuple[str, str, str]] = {
    "events": ("clean_events_in", "EmailEvent", "event_time"),
    "conversions": ("conversions_in", "Conversion", "event_time"),
    "profiles": ("profiles_in", "SubscriberProfile", "updated_at"),
    "scores": ("scores_in", "SubscriberScore", "as_of"),
}
EXPECT_KEYS = ("subscriber_id", "campaign_id", "action", "at", "payload")


class CaseFileError(ValueError):
    """A case file that cannot be read; the message names the file and the case."""


def parse_time(value: Any, start_ms: int, where: str) -> int:
    """`at`: an offset from the case start (`90s`, `1h30m`, `-2d`), an ISO-8601 time
    (`2026-01-05T10:00:00Z`) or epoch milliseconds."""
    if isinstance(value, bool):
        raise CaseFileError(f"{where}: bad time {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)
    text = str(value).strip()
    match = _OFFSET.match(text)
    if match:
        ms = sum(int(n) * _UNITS[u] for n, u in _PART.findall(match.group(2)))
        return start_ms - ms if match.group(1) else start_ms + ms
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CaseFileError(f"{where}: bad time {value!r} (use 90s, 5m, 2h, 1d, or "
                            "2026-01-05T10:00:00Z)") from None
    return int(parsed.replace(tzinfo=parsed.tzinfo or UTC).timestamp() * 1000)


def format_time(ms: int) -> str:
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace(".000+00:00", "Z").replace("+00:00", "Z")


@dataclass
class Case:
    rule_id: str
    name: str
    where: str  # file:line for messages
    start_ms: int
    rows: dict[str, list[dict]]  # input table -> rows (own subscriber ids and times)
    expect: list[dict]  # normalized expectations (at as epoch ms)


def _defaults(kind: str, i: int) -> dict[str, Any]:
    schema = KINDS[kind][1]
    row: dict[str, Any] = {f: None for f in avro_schema.field_names(schema)}
    if kind == "events":
        row.update(event_id=f"e{i}", provider="tracker", suspected_bot=False, attributes={})
    elif kind == "conversions":
        row.update(order_id=f"o{i}", value=10.0)
    elif kind == "scores":
        row.update(score=0.0, tier="active")
    return row


def _row(kind: str, raw: Mapping[str, Any], i: int, start_ms: int, where: str) -> dict:
    time_field = KINDS[kind][2]
    row = _defaults(kind, i)
    known = set(row)
    for key, value in raw.items():
        if key == "at":
            row[time_field] = parse_time(value, start_ms, where)
        elif key in known:
            row[key] = value
        else:
            raise CaseFileError(f"{where}: unknown field {key!r} for {kind} "
                                f"(fields: at, {', '.join(sorted(known))})")
    if row.get(time_field) is None:
        raise CaseFileError(f"{where}: every row needs 'at' (its {time_field})")
    if kind == "events":
        row["received_time"] = row["received_time"] or row["event_time"]
        row["attributes"] = {str(k): str(v) for k, v in (row["attributes"] or {}).items()}
    if not row.get("subscriber_id"):
        raise CaseFileError(f"{where}: every row needs a subscriber_id")
    return row


def _expectation(raw: Mapping[str, Any], start_ms: int, where: str) -> dict:
    unknown = set(raw) - set(EXPECT_KEYS)
    if unknown:
        raise CaseFileError(f"{where}: unknown key(s) {sorted(unknown)} in expect "
                            f"(keys: {', '.join(EXPECT_KEYS)})")
    if "subscriber_id" not in raw:
        raise CaseFileError(f"{where}: each expected trigger needs a subscriber_id")
    out = dict(raw)
    if "at" in out:
        out["at"] = parse_time(out["at"], start_ms, where)
    if "payload" in out and not isinstance(out["payload"], Mapping):
        raise CaseFileError(f"{where}: payload is a mapping of the keys to check")
    return out


def load_cases(rule: Rule) -> list[Case]:
    """The cases of one rule; a rule without a case file has none (validate says so)."""
    path = rule.cases_path
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping) or not isinstance(data.get("cases"), list):
        raise CaseFileError(f"{display(path)}: needs a top-level 'cases:' list")
    lines = path.read_text().splitlines()
    out = []
    for n, raw in enumerate(data["cases"], 1):
        name = str((raw or {}).get("name") or f"case {n}")
        line = next((i + 1 for i, text in enumerate(lines) if name in text), 1)
        where = f"{display(path)}:{line} ({name})"
        if not isinstance(raw, Mapping) or "expect" not in raw:
            raise CaseFileError(f"{where}: a case needs 'expect' (a list; [] = must not fire)")
        unknown = set(raw) - {"name", "start", "expect", *KINDS}
        if unknown:
            raise CaseFileError(f"{where}: unknown key(s) {sorted(unknown)}")
        start_ms = parse_time(raw.get("start", DEFAULT_START), 0, where)
        rows = {KINDS[kind][0]: [_row(kind, r, i, start_ms, where)
                                 for i, r in enumerate(raw.get(kind) or [], 1)]
                for kind in KINDS}
        expect = [_expectation(e, start_ms, where) for e in raw["expect"] or []]
        out.append(Case(rule.rule_id, name, where, start_ms, rows, expect))
    return out


# --------------------------------------------------------------------------------------
# Putting all cases into one run and taking the results apart again
# --------------------------------------------------------------------------------------

def _prefix(k: int) -> str:
    return f"case{k}~"


def _span(case: Case) -> tuple[int, int] | None:
    times = [r[KINDS[kind][2]] for kind in KINDS for r in case.rows[KINDS[kind][0]]]
    return (min(times), max(times)) if times else None


def combine(cases: list[Case]) -> tuple[dict[str, list[dict]], list[int]]:
    """(rows per input table for all cases, time shift per case)."""
    combined: dict[str, list[dict]] = {table: [] for table, _, _ in KINDS.values()}
    shifts: list[int] = []
    next_free: int | None = None
    for k, case in enumerate(cases):
        span = _span(case)
        shift = 0
        if span and next_free is not None and span[0] < next_free:
            weeks = -(-(next_free - span[0]) // (7 * DAY_MS))
            shift = weeks * 7 * DAY_MS
        shifts.append(shift)
        if span:
            next_free = span[1] + shift + CASE_GAP_MS
        for table, _, time_field in KINDS.values():
            # Fed in time order, as the clean job delivers a subscriber's events.
            for row in sorted(case.rows[table], key=lambda r, f=time_field: r[f]):
                moved = dict(row)
                moved["subscriber_id"] = _prefix(k) + row["subscriber_id"]
                moved[time_field] = row[time_field] + shift
                if table == "clean_events_in":
                    moved["received_time"] = row["received_time"] + shift
                combined[table].append(moved)
    return combined, shifts


@dataclass
class CaseResult:
    case: Case
    missing: list[dict] = field(default_factory=list)
    unexpected: list[dict] = field(default_factory=list)
    actual: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def _matches(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    for key, value in expected.items():
        if key == "payload":
            if any(actual["payload"].get(k) != v for k, v in value.items()):
                return False
        elif actual.get(key) != value:
            return False
    return True


def compare(case: Case, actual: list[dict]) -> CaseResult:
    """Each expectation takes the first unused trigger it matches (keys it names must be
    equal; payload keys it names must be equal); leftovers on either side are the diff."""
    result = CaseResult(case, actual=actual)
    unused = list(actual)
    for exp in case.expect:
        hit = next((a for a in unused if _matches(exp, a)), None)
        if hit is None:
            result.missing.append(exp)
        else:
            unused.remove(hit)
    result.unexpected = unused
    return result


def format_offset(ms: int) -> str:
    """An offset the way cases write it: 3d, 1h30m, -10s, 250ms."""
    sign, rest, parts = ("-" if ms < 0 else ""), abs(ms), []
    for unit in ("d", "h", "m", "s", "ms"):
        count, rest = divmod(rest, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + ("".join(parts) or "0s")


def _show(trigger: Mapping[str, Any], start_ms: int) -> str:
    shown = {k: trigger[k] for k in EXPECT_KEYS if k in trigger}
    if "at" in shown:
        shown["at"] = f"{format_offset(shown['at'] - start_ms)} = {format_time(shown['at'])}"
    return json.dumps(shown, ensure_ascii=False)


@dataclass
class Report:
    results: list[CaseResult]
    problems: list[SqlProblem | str]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.results) and bool(self.results)

    def render(self) -> str:
        lines = [str(p) for p in self.problems]
        for r in self.results:
            mark = "ok  " if r.ok else "FAIL"
            lines.append(f"{mark} {r.case.rule_id}: {r.case.name}")
            if r.ok:
                continue
            lines.append(f"     at {r.case.where}")
            for exp in r.missing:
                lines.append(f"     - expected, not produced: {_show(exp, r.case.start_ms)}")
            for act in r.unexpected:
                lines.append(f"     + produced, not expected: {_show(act, r.case.start_ms)}")
            if len(r.actual) > len(r.unexpected):  # some matched: show the whole picture
                lines.append("     all triggers of this case:")
                lines += [f"       {_show(a, r.case.start_ms)}" for a in r.actual]
        passed = sum(r.ok for r in self.results)
        lines.append(f"{passed} of {len(self.results)} cases passed"
                     + (f", {len(self.problems)} problem(s)" if self.problems else ""))
        return "\n".join(lines)


def collect(table: Any) -> tuple[list[dict], list[str]]:
    """Run the trigger table to its end: (rows as dicts, problems). A rule whose output
    updates or retracts rows is a problem: the trigger sinks take inserts only."""
    from pyflink.common import RowKind

    names = avro_schema.field_names(rules.SCHEMA)
    rows, updating = [], set()
    with table.execute().collect() as results:
        for row in results:
            values = dict(zip(names, tuple(row), strict=True))
            if row.get_row_kind() == RowKind.INSERT:
                rows.append(values)
            else:
                updating.add(values["rule_id"])
    return rows, [f"rule {r}: its result updates earlier rows; the trigger sinks take "
                  "inserts only (python -m jobs.rules validate shows where)"
                  for r in sorted(updating)]


def split_results(cases: list[Case], shifts: list[int], rows: list[dict]
                  ) -> tuple[dict[int, list[dict]], list[str]]:
    """Triggers per case index (only the case's own rule), prefix and shift undone; plus
    problems that belong to no single case (a trigger id produced twice)."""
    per_case: dict[int, list[dict]] = {k: [] for k in range(len(cases))}
    problems = []
    seen: dict[str, dict] = {}
    for row in rows:
        if row["trigger_id"] in seen:
            problems.append(f"rule {row['rule_id']} produced trigger id "
                            f"{row['trigger_id'][:12]}… twice (a replay-safe rule emits "
                            f"each trigger once): {row['subscriber_id']}")
        seen[row["trigger_id"]] = row
        match = re.match(r"^case(\d+)~(.*)$", row["subscriber_id"])
        if not match:
            problems.append(f"trigger for an unknown subscriber {row['subscriber_id']!r}")
            continue
        k = int(match.group(1))
        if cases[k].rule_id != row["rule_id"]:
            continue
        per_case[k].append({
            "trigger_id": row["trigger_id"],
            "subscriber_id": match.group(2),
            "campaign_id": row["campaign_id"],
            "action": row["action"],
            "at": row["event_time"] - shifts[k],
            "payload": json.loads(row["payload"]),
        })
    for triggers in per_case.values():
        triggers.sort(key=lambda t: (t["at"], t["subscriber_id"], t["trigger_id"]))
    return per_case, problems


def run_cases(t_env: Any, config: Mapping[str, Any], rule_list: list[Rule],
              data_dir: Path) -> Report:
    """Declare the rules, then run every case of every rule in one Flink job."""
    from jobs.rules import local

    problems: list[SqlProblem | str] = []
    cases: list[Case] = []
    for rule in rule_list:
        try:
            rule_cases = load_cases(rule)
        except (CaseFileError, yaml.YAMLError) as exc:
            problems.append(str(exc))
            continue
        if not rule_cases:
            problems.append(f"{display(rule.cases_path)}: no cases for rule {rule.rule_id}")
        elif not any(not c.expect for c in rule_cases):
            problems.append(f"{display(rule.cases_path)}: add a case where the rule must not fire "
                            "(expect: [])")
        cases += rule_cases
    rows, shifts = combine(cases)
    local.declare_inputs(t_env, config, data_dir, rows)
    # Parsed and validated here; not planned one by one (seconds per rule on a small
    # machine): the run plans them all at once, and `validate` plans each.
    sql_problems = rules.declare_rules(t_env, config, rule_list)
    if sql_problems:
        return Report([], [*problems, *sql_problems])
    triggers, kind_problems = collect(rules.triggers(t_env, rule_list))
    per_case, run_problems = split_results(cases, shifts, triggers)
    results = [compare(case, per_case[k]) for k, case in enumerate(cases)]
    return Report(results, [*problems, *kind_problems, *run_problems])
