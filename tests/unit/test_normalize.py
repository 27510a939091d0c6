"""udfs.normalize: the entry point's contract across all providers."""

import base64
import contextlib
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from udfs import normalize as normalize_module
from udfs.canonical import EMAIL_EVENT_FIELDS
from udfs.normalize import (
    DEAD_LETTER_CODES,
    PARSERS,
    Normalized,
    NormalizeSettings,
    Rejected,
    main,
    normalize,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
AVSC = ROOT / "avro" / "EmailEvent.avsc"
KEY = b"test-key"
SETTINGS = NormalizeSettings(hmac_key=KEY)
RECEIVED = 1767300000000
CONTENT_TYPES = {"mandrill": "application/x-www-form-urlencoded", "ses": "text/plain"}
ALL_FIXTURES = sorted((p.parent.name, p) for p in FIXTURES.glob("*/*") if p.is_file())


def run(provider, body, content_type="application/json", settings=SETTINGS):
    return normalize(provider, body, content_type, RECEIVED, settings)


def run_fixture(provider, path):
    return run(provider, path.read_bytes(), CONTENT_TYPES.get(provider, "application/json"))


def check_event_shape(event):
    assert tuple(event) == EMAIL_EVENT_FIELDS
    assert isinstance(event["event_id"], str) and len(event["event_id"]) == 32
    assert isinstance(event["event_time"], int) and isinstance(event["received_time"], int)
    assert all(isinstance(k, str) and isinstance(v, str)
               for k, v in event["attributes"].items())


# ---------------------------------------------------------------- settings

def test_settings_defaults_and_overrides():
    settings = NormalizeSettings(hmac_key=KEY, metadata_fields={"ses": {"arm": "variant"}})
    assert settings.fields_for("ses") == {"subscriber_id": "subscriber_id",
                                          "campaign_id": "campaign_id",
                                          "ab_test_id": "ab_test_id", "arm": "variant"}
    assert settings.fields_for("sendgrid")["arm"] == "arm"


@pytest.mark.parametrize("kwargs", [
    {"hmac_key": b""},
    {"hmac_key": "text-key"},
    {"hmac_key": KEY, "metadata_fields": {"acme": {"arm": "v"}}},
    {"hmac_key": KEY, "metadata_fields": {"ses": {"variant": "v"}}},
    {"hmac_key": KEY, "metadata_fields": {"ses": {"arm": ""}}},
])
def test_settings_reject_misconfiguration(kwargs):
    with pytest.raises(ValueError):
        NormalizeSettings(**kwargs)


def test_settings_from_project_config():
    config = {"normalize": {"hmac_key": "k1",
                            "metadata_fields": {"sendgrid": {"campaign_id": "campaign_key"}}}}
    settings = NormalizeSettings.from_config(config)
    assert settings.hmac_key == b"k1"
    assert settings.fields_for("sendgrid")["campaign_id"] == "campaign_key"


def test_settings_from_repository_defaults():
    settings_module = pytest.importorskip("settings")
    settings = NormalizeSettings.from_config(settings_module.load(environ={}))
    assert settings.hmac_key and settings.fields_for("ses")["arm"] == "arm"


# ---------------------------------------------------------------- body-level errors

def test_unknown_provider_keeps_the_body():
    result = run("acme", b"[]")
    assert result == Normalized([], [Rejected(
        "unknown_provider",
        "provider 'acme' is not one of ['mailgun', 'mandrill', 'postmark', 'sendgrid', 'ses', "
        "'sparkpost', 'tracker']", b"[]")], None)


def test_provider_name_is_case_and_space_insensitive():
    body = (FIXTURES / "tracker" / "open.json").read_bytes()
    assert run(" Tracker ", body).events == run("tracker", body).events


@pytest.mark.parametrize("provider", sorted(PARSERS))
def test_non_utf8_body_is_invalid_encoding(provider):
    body = b'[{"event": "open", "email": "\xff"}]'
    result = run(provider, body)
    assert [(r.code, r.raw) for r in result.rejected] == [("invalid_encoding", body)]


def test_utf8_bom_is_ignored():
    body = (FIXTURES / "tracker" / "open.json").read_bytes()
    assert run("tracker", b"\xef\xbb\xbf" + body).events == run("tracker", body).events


def test_deep_nesting_is_a_dead_letter_not_a_crash():
    body = b"[" * 100_000 + b"]" * 100_000
    result = run("sendgrid", body)
    assert [r.code for r in result.rejected] == ["invalid_json"]


# ---------------------------------------------------------------- never raises

def _garbage_bodies():
    rng = random.Random(20260101)
    bodies = [b"", b"null", b"true", b"0", b'"x"', b"{}", b"[]", b"[null]", b"[[]]", b"[{}]",
              b'{"msys": {}}', b'[{"msys": {"x": {}}}]', b"mandrill_events=", b"=&=&",
              b'{"Type": "Notification", "TopicArn": "a", "Message": 5}',
              b'{"requestId": "r", "records": [5, {"data": 5}]}',
              b'{"event-data": [], "signature": 5}',
              b'[{"event": "open", "timestamp": 1e999}]',
              b'[{"event": ["open"], "timestamp": {}}]']
    for _ in range(40):
        bodies.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    for _ in range(40):
        value = rng.choice([1, "s", None, True, 1.5, [], {}])
        for _ in range(rng.randrange(1, 4)):
            value = rng.choice([[value], {"event": value, "msys": value, "mail": value,
                                          "RecordType": value, "msg": value, "ts": value}])
        bodies.append(json.dumps(value).encode())
    return bodies


@pytest.mark.parametrize("provider", sorted(PARSERS))
def test_garbage_never_raises(provider):
    for body in _garbage_bodies():
        for content_type in (None, "application/json", "application/x-www-form-urlencoded"):
            result = normalize(provider, body, content_type, RECEIVED, SETTINGS)
            assert isinstance(result, Normalized)
            for event in result.events:
                check_event_shape(event)
            for rejected in result.rejected:
                assert rejected.code in DEAD_LETTER_CODES
                assert rejected.code != "internal_error", (body, rejected)
                assert isinstance(rejected.raw, bytes) and rejected.message


def test_a_parser_bug_is_an_internal_error_dead_letter(monkeypatch):
    def boom(value, ctx):
        raise RuntimeError("bug")

    monkeypatch.setattr(normalize_module.tracker, "parse_item", boom)
    result = run("tracker", b'[{"a": 1}, {"b": 2}]')
    assert [(r.code, r.message, r.raw) for r in result.rejected] == [
        ("internal_error", "tracker: unexpected RuntimeError: bug", b'{"a":1}'),
        ("internal_error", "tracker: unexpected RuntimeError: bug", b'{"b":2}')]


def test_a_split_bug_is_an_internal_error_with_the_body(monkeypatch):
    def boom(text, content_type):
        raise KeyError("x")

    monkeypatch.setattr(normalize_module.sendgrid, "split", boom)
    result = run("sendgrid", b"[]")
    assert [(r.code, r.raw) for r in result.rejected] == [("internal_error", b"[]")]


# ---------------------------------------------------------------- all fixtures

@pytest.mark.parametrize("provider, path", ALL_FIXTURES, ids=lambda v: str(v)[-40:])
def test_fixture_events_match_the_avro_schema(provider, path):
    fastavro = pytest.importorskip("fastavro")
    schema = fastavro.parse_schema(json.loads(AVSC.read_text()))
    result = run_fixture(provider, path)
    for event in result.events:
        check_event_shape(event)
        assert event["provider"] == provider
        assert event["received_time"] == RECEIVED
        fastavro.validation.validate(event, schema, raise_errors=True)


@pytest.mark.parametrize("provider, path", ALL_FIXTURES, ids=lambda v: str(v)[-40:])
def test_every_item_dead_letter_replays_alone_to_the_same_code(provider, path):
    body = path.read_bytes()
    for rejected in run_fixture(provider, path).rejected:
        if rejected.raw == body:
            continue
        replay = run(provider, rejected.raw)
        assert replay.events == []
        assert [r.code for r in replay.rejected] == [rejected.code]


_ADDRESS = re.compile(r"[\w.+-]+@(?:[\w-]+\.)+[\w-]{2,}")


@pytest.mark.parametrize("provider, path", ALL_FIXTURES, ids=lambda v: str(v)[-40:])
def test_no_input_address_appears_in_any_event(provider, path):
    text = unquote(path.read_text(encoding="utf-8").replace("+", " "))
    if provider == "ses" and '"records"' in text:  # Firehose hides records in base64
        for record in json.loads(text)["records"]:
            with contextlib.suppress(ValueError):
                text += base64.b64decode(record["data"], validate=True).decode()
    found = {a.lower() for a in _ADDRESS.findall(text)}
    result = run_fixture(provider, path)
    # Message-IDs look like addresses; they are the only address-shaped values allowed out
    message_ids = {e["message_id"] for e in result.events if e["message_id"]} | {
        e["attributes"].get("rfc_message_id", "").strip("<>") for e in result.events}
    addresses = {a for a in found
                 if not any(a in m.lower() or m.lower() in a for m in message_ids if m)}
    dumped = json.dumps(result.events, ensure_ascii=False).lower()
    for address in addresses:
        assert address not in dumped
        assert address.replace("@", "%40") not in dumped
        assert address.split("@")[0] + "@" not in dumped


# ---------------------------------------------------------------- command line

def test_command_prints_events_and_dead_letters(capsys):
    path = FIXTURES / "sendgrid" / "mixed.json"
    assert main(["--provider", "sendgrid", "--received-time", str(RECEIVED), str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [line for line in lines if not line.get("dead_letter")]
    dead = [line for line in lines if line.get("dead_letter")]
    assert len(events) == 5 and all(tuple(e) == EMAIL_EVENT_FIELDS for e in events)
    assert {e["received_time"] for e in events} == {RECEIVED}
    assert [(d["error"], d["provider"]) for d in dead] == [
        ("unknown_event_type", "sendgrid"), ("missing_field", "sendgrid"),
        ("invalid_timestamp", "sendgrid"), ("invalid_format", "sendgrid")]
    assert all(set(d) == {"dead_letter", "error", "message", "provider"} for d in dead)


def test_command_reports_control_on_stderr_and_bad_input_with_exit_0(capsys, tmp_path):
    path = FIXTURES / "ses" / "subscription_confirmation.json"
    assert main(["--provider", "ses", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "sns_subscription_confirmation" in captured.err
    assert main(["--provider", "ses", str(tmp_path / "missing.json")]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["dead_letter"], line["error"]) == (True, "unreadable_input")
    assert main(["--provider", "nope", str(path)]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["error"] == "unknown_provider"


def test_command_runs_as_a_module_without_traceback(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\x00garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "udfs.normalize", "--provider", "postmark", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["error"] == "invalid_encoding"
