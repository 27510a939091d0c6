"""The rules' file handling without Flink: rule and view files (headers, line numbers kept
for Flink's messages), YAML cases (times, defaults, isolation of cases in one run) and the
diff a failing case prints."""

from __future__ import annotations

import json

import pytest

import settings
from jobs import rules
from jobs.rules import cases
from jobs.rules.files import (
    flink_message,
    problem_from_flink,
    read_rule,
    read_rules,
    split_statements,
)

CONFIG = settings.load(environ={})
GOOD = """-- rule: demo_rule
-- detects: something
--   on two lines
-- action: do_it
-- description: A demo.
INSERT INTO journey_triggers
SELECT trigger_id, rule_id, subscriber_id, campaign_id, action, payload, event_time
FROM somewhere;
-- trailing comment
"""


def _rule(tmp_path, text, name="demo_rule.sql"):
    path = tmp_path / name
    path.write_text(text)
    return read_rule(path)


def test_rule_file_headers_and_query_keep_file_lines(tmp_path):
    rule = _rule(tmp_path, GOOD)
    assert rule.problems == []
    assert rule.headers == {"rule": "demo_rule", "detects": "something on two lines",
                            "action": "do_it", "description": "A demo."}
    assert rule.query.line == 6
    view = rule.view_statement().split("\n")
    # Flink reports positions in the statement it parsed: they must be the file's.
    assert view[0].startswith("CREATE TEMPORARY VIEW rule_demo_rule AS ")
    assert view[7 - 1].startswith("SELECT trigger_id")
    assert view[8 - 1] == "FROM somewhere"  # the terminating ';' is dropped
    assert view[5].strip() == ""  # INSERT INTO journey_triggers blanked, same columns


@pytest.mark.parametrize(("text", "name", "message"), [
    (GOOD.replace("-- action: do_it\n", ""), "demo_rule.sql", "lacks '-- action: ...'"),
    (GOOD, "other_rule.sql", "must match the file name"),
    (GOOD.replace("INSERT INTO journey_triggers\n", ""), "demo_rule.sql",
     "exactly one 'INSERT INTO journey_triggers"),
    (GOOD + "INSERT INTO journey_triggers SELECT 1;\n", "demo_rule.sql", "(found 2)"),
    (GOOD.replace("demo_rule", "Bad-Name"), "Bad-Name.sql", "a rule id is lower case"),
])
def test_rule_file_problems_are_reported_without_flink(tmp_path, text, name, message):
    rule = _rule(tmp_path, text, name)
    assert any(message in str(p) for p in rule.problems), rule.problems
    assert all(str(p).startswith(f"{tmp_path / name}:") for p in rule.problems)


def test_insert_in_a_comment_does_not_count(tmp_path):
    rule = _rule(tmp_path, GOOD.replace("-- action: do_it",
                                        "-- action: do_it (INSERT INTO journey_triggers)"))
    assert rule.problems == []


def test_shipped_views_split_into_statements_with_their_lines():
    path = rules.views_path(CONFIG)
    statements = split_statements(path)
    lines = path.read_text().split("\n")
    names = []
    for stmt in statements:
        assert lines[stmt.line - 1].startswith("CREATE TEMPORARY VIEW")
        assert stmt.text.split("\n")[stmt.line - 1] == lines[stmt.line - 1]
        names.append(lines[stmt.line - 1].split()[3])
    assert names == ["clean_events", "conversions", "profile_events", "subscriber_profiles",
                     "engagement_scores"]


def test_views_file_without_final_semicolon_is_an_error(tmp_path):
    path = tmp_path / "views.sql"
    path.write_text("CREATE TEMPORARY VIEW a AS SELECT 1;\nCREATE TEMPORARY VIEW b AS\n"
                    "SELECT 2 -- no end\n")
    with pytest.raises(ValueError, match="lacks its closing ';'"):
        split_statements(path)


def test_flink_message_is_placed_at_its_line(tmp_path):
    rule = _rule(tmp_path, GOOD)
    exc = RuntimeError(
        "An error occurred while calling o12.executeSql.\n"
        ": org.apache.flink.table.api.ValidationException: SQL validation failed. From line 8,"
        " column 6 to line 8, column 14: Object 'somewhere' not found\n"
        "\tat org.apache.flink.table.planner.Foo.bar(Foo.java:1)\n")
    problem = problem_from_flink(rule.query, flink_message(exc))
    assert problem.line == 8
    assert str(problem) == (f"{rule.path}:8: SQL validation failed. From line 8, column 6 to "
                            "line 8, column 14: Object 'somewhere' not found")


def test_every_shipped_rule_has_headers_and_cases_with_a_must_not_fire_case():
    shipped = read_rules(rules.rules_dir(CONFIG))
    assert len(shipped) >= 6
    for rule in shipped:
        assert rule.problems == [], rule.problems
        loaded = cases.load_cases(rule)
        assert loaded, f"{rule.rule_id} has no cases"
        assert any(not c.expect for c in loaded), f"{rule.rule_id}: no must-not-fire case"
        assert any(c.expect for c in loaded), f"{rule.rule_id}: no case where it fires"


@pytest.mark.parametrize(("value", "expected"), [
    ("0s", 1_000_000), ("90s", 1_090_000), ("1h30m", 1_000_000 + 5_400_000),
    ("-2d", 1_000_000 - 2 * 86_400_000), ("250ms", 1_000_250), (5, 5),
    ("1970-01-01T00:00:01Z", 1000), ("1970-01-01T01:00:00+01:00", 0),
])
def test_case_times(value, expected):
    assert cases.parse_time(value, 1_000_000, "here") == expected


def test_case_file_errors_name_file_and_case(tmp_path):
    rule = _rule(tmp_path, GOOD)
    rule.cases_path.write_text("cases:\n  - name: typo\n    events:\n"
                               "      - {at: 0s, subscriber_id: s1, evnt_type: open}\n"
                               "    expect: []\n")
    with pytest.raises(cases.CaseFileError, match=r"demo_rule.yaml:2 \(typo\): unknown field "
                                                  r"'evnt_type' for events"):
        cases.load_cases(rule)
    rule.cases_path.write_text("cases:\n  - name: no expect\n    events: []\n")
    with pytest.raises(cases.CaseFileError, match="needs 'expect'"):
        cases.load_cases(rule)


def _case(rule_id, events, expect, start="2026-01-05T00:00:00Z"):
    start_ms = cases.parse_time(start, 0, "t")
    rows = {table: [] for table, _, _ in cases.KINDS.values()}
    rows["clean_events_in"] = [cases._row("events", e, i, start_ms, "t")
                               for i, e in enumerate(events, 1)]
    return cases.Case(rule_id, "c", "f.yaml:1", start_ms, rows,
                      [cases._expectation(e, start_ms, "t") for e in expect])


def test_cases_are_isolated_by_subscriber_prefix_and_time_shift():
    a = _case("r", [{"at": "0s", "event_type": "open", "subscriber_id": "s1"},
                    {"at": "3d", "event_type": "open", "subscriber_id": "s1"}], [])
    b = _case("r", [{"at": "-1d", "event_type": "open", "subscriber_id": "s1"}], [])
    rows, shifts = cases.combine([a, b])
    events = rows["clean_events_in"]
    assert [e["subscriber_id"] for e in events] == ["case0~s1", "case0~s1", "case1~s1"]
    assert shifts[0] == 0
    week = 7 * cases.DAY_MS
    assert shifts[1] % week == 0  # day and week windows line up as in the case file
    # case b starts more than the gap after case a ended: no shared window or look-back
    assert events[2]["event_time"] - events[1]["event_time"] >= cases.CASE_GAP_MS
    assert events[2]["received_time"] == events[2]["event_time"]


def test_results_are_mapped_back_and_a_failing_case_shows_a_diff():
    case = _case("r", [{"at": "0s", "event_type": "open", "subscriber_id": "s1"}],
                 [{"subscriber_id": "s1", "action": "push", "at": "1m",
                   "payload": {"product_id": "p1"}}])
    shift = 364 * cases.DAY_MS
    row = {"trigger_id": "abc", "rule_id": "r", "subscriber_id": "case0~s1",
           "campaign_id": None, "action": "push", "event_time": case.start_ms + 60_000 + shift,
           "payload": json.dumps({"product_id": "p2", "url": "u"})}
    other_rule = dict(row, trigger_id="def", rule_id="other")
    per_case, problems = cases.split_results([case], [shift], [row, other_rule, row])
    assert [t["at"] - case.start_ms for t in per_case[0]] == [60_000, 60_000]
    assert problems and "produced trigger id abc… twice" in problems[0]
    result = cases.compare(case, per_case[0][:1])
    assert not result.ok
    text = cases.Report([result], []).render()
    assert "FAIL r: c" in text
    assert ('- expected, not produced: {"subscriber_id": "s1", "action": "push", '
            '"at": "1m = 2026-01-05T00:01:00Z", "payload": {"product_id": "p1"}}'
            in text)
    assert '+ produced, not expected: {"subscriber_id": "s1", "campaign_id": null' in text
    assert "0 of 1 cases passed" in text
    ok = cases.compare(case, [dict(per_case[0][0], payload={"product_id": "p1", "x": 1})])
    assert ok.ok  # payload keys the case does not name are not compared


def test_rules_watermark_must_cover_the_clean_jobs_click_delay():
    assert rules.out_of_orderness_s(CONFIG) == 30
    tight = settings.load(environ={"EMAIL_STREAMING__RULES__OUT_OF_ORDERNESS_S": "15"})
    with pytest.raises(ValueError, match=r"must exceed clean.out_of_orderness_s \+ "
                                         r"clean.bot_burst_window_s \(15\)"):
        rules.out_of_orderness_s(tight)


@pytest.mark.parametrize(("ms", "text"), [(0, "0s"), (5_400_000, "1h30m"), (-10_000, "-10s"),
                                         (3 * 86_400_000 + 250, "3d250ms")])
def test_offsets_print_as_cases_write_them(ms, text):
    assert cases.format_offset(ms) == text
    assert cases.parse_time(text, 0, "t") == ms
