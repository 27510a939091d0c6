"""Raw SendGrid webhooks -> normalize -> clean -> A/B decision job on the local Flink
cluster: a campaign whose arm B clicks 10 % against A's 2 % (400 deliveries each) must end
as a significant winner B in PostgreSQL ab_decisions, ab_decision_history and the
campaign.ab_decisions topic, with exact per-arm counts (a scanner click excluded) and the
deterministic decision id.

Event time only moves with events, so after the scenario the test keeps sending "tick"
deliveries of another campaign, later and later, until the decision's look has passed.

The clicks are sent only once every delivery is in the clean stream, as happens in life.
Sent together, a click could be judged before its delivery arrived: a partition of
email.events that was idle while the jobs started joins the watermark late, and the
clean job's verdict on a click is final once the watermark has passed it."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import settings
from devtools import flink_rest, kafka_io, postgres_io
from jobs.__main__ import submit
from stack.postgres import apply_schema

pytestmark = pytest.mark.e2e

# SendGrid timestamps are epoch seconds; lateness is judged against the receive time (now),
# so the scenario happens an hour ago, on a minute boundary.
T = int(time.time()) // 60 * 60 - 3600
N, CLICKS = 400, {"A": 8, "B": 40}
TEST = {"control_arm": "A", "tau": 0.02, "min_delivered_per_arm": 100, "min_elapsed_s": 0,
        "expected_split": {"A": 1, "B": 1}}


def sg(kind, sub, offset_s, campaign, arm=None, **extra):
    event = {"email": f"{sub}@example.org", "timestamp": T + offset_s, "event": kind,
             "sg_message_id": f"m-{sub}.filter1", "subscriber_id": sub,
             "campaign_id": campaign}
    if arm:
        event.update(ab_test_id="t1", arm=arm)
    event.update(extra)
    return event


def body(events):
    return ("[" + ",\r\n".join(json.dumps(e) for e in events) + "]").encode()


def scenario(campaign):
    """(delivery bodies, click bodies), every event within one look interval (60 s):
    deliveries at T+0..9 s, human clicks 20-44 s after them; one scanner click 2 s after
    its delivery (suspected bot)."""
    deliveries, clicks = [], []
    for arm in ("A", "B"):
        subs = [f"{arm.lower()}{i}" for i in range(N)]
        delivered = [sg("delivered", s, i % 10, campaign, arm) for i, s in enumerate(subs)]
        deliveries += [body(delivered[i:i + 100]) for i in range(0, N, 100)]
        arm_clicks = [sg("click", s, 30 + i % 15, campaign, arm, url="https://shop.example/x")
                      for i, s in enumerate(subs[:CLICKS[arm]])]
        if arm == "A":
            arm_clicks.append(sg("click", subs[-1], 11, campaign, arm,
                                 url="https://shop.example/x"))
        clicks.append(body(arm_clicks))
    return deliveries, clicks


def tick(campaign, k):
    return body([sg("delivered", f"tick{k}-{j}", 600 + 60 * k, campaign) for j in range(6)])


@pytest.fixture
def ab_config(e2e_config, tmp_path):
    """The test's own topics plus a definition of A/B test t1."""
    _, path, tag = e2e_config
    override = yaml.safe_load(Path(path).read_text())
    override["abtest"] = {"look_interval_s": 60, "tests": {"t1": TEST}}
    ab_path = tmp_path / "abtest.yaml"
    ab_path.write_text(yaml.safe_dump(override))
    return settings.load(ab_path), str(ab_path), tag


def test_winner_reaches_postgres_and_the_topic(ab_config):
    from jobs.abtest import decision_id

    config, path, tag = ab_config
    apply_schema(config)  # a stack started before 003_ab_decisions.sql existed lacks it
    bootstrap = config["kafka"]["bootstrap_servers"]
    raw = settings.topic(config, "raw")
    campaign = f"c-{tag}"
    jobs = ["normalize", "clean", "abtest"]
    with ThreadPoolExecutor(3) as pool:
        ids = dict(zip(jobs, pool.map(lambda job: submit(job, config, path), jobs),
                       strict=True))
    try:
        for job_id in ids.values():
            flink_rest.wait_running(config, job_id)
        deliveries, clicks = scenario(campaign)
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", deliveries)
        kafka_io.read_avro(
            bootstrap, settings.topic(config, "clean"), "EmailEvent", timeout_s=120,
            until=lambda r: sum(x["campaign_id"] == campaign and x["event_type"] == "delivered"
                                for x in r) >= 2 * N)
        kafka_io.produce_raw(bootstrap, raw, "sendgrid", clicks)
        # Ticks only once the clicks are in the clean topic: a tick sent with them could
        # overtake them (normalize reads the raw partitions in parallel) and move the A/B
        # job's watermark past them.
        kafka_io.read_avro(
            bootstrap, settings.topic(config, "clean"), "EmailEvent", timeout_s=120,
            until=lambda r: sum(x["campaign_id"] == campaign and x["event_type"] == "click"
                                for x in r) >= sum(CLICKS.values()) + 1)

        want_arms = [("A", N, CLICKS["A"]), ("B", N, CLICKS["B"])]
        query = ("SELECT status, winner, significant, metric, control_arm, version, "
                 "decision_id, arms FROM ab_decisions WHERE campaign_id = %s AND "
                 "ab_test_id = 't1'")

        def done(rows):
            return bool(rows) and rows[0][0] == "winner" and [
                (a["arm"], a["delivered"], a["successes"])
                for a in json.loads(rows[0][7])] == want_arms

        rows, k = [], 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not done(rows):
            kafka_io.produce_raw(bootstrap, raw, "sendgrid", [tick(f"tick-{tag}", k)])
            k += 1
            rows = postgres_io.wait_for_rows(config, query, (campaign,), done, timeout_s=15)
        assert rows, "no ab_decisions row"
        status, winner, significant, metric, control, version, did, arms = rows[0]
        assert (status, winner, significant, metric, control) == (
            "winner", "B", True, "clicks", "A")
        assert [(a["arm"], a["delivered"], a["successes"]) for a in json.loads(arms)] == (
            want_arms)
        assert json.loads(arms)[1]["p_value"] < 0.05
        assert did == decision_id(campaign, "t1", version)

        # A second JDBC sink, flushed on its own: its last row may land a moment later.
        history = postgres_io.wait_for_rows(
            config, "SELECT version, status, decision_id FROM ab_decision_history "
                    "WHERE campaign_id = %s ORDER BY version", (campaign,),
            until=lambda h: bool(h) and h[-1][0] >= version, timeout_s=30)
        assert history[-1] == (version, "winner", did)
        assert [h[2] for h in history] == [decision_id(campaign, "t1", v)
                                           for v, _, _ in history]

        records = kafka_io.read_avro(
            bootstrap, settings.topic(config, "ab_decisions"), "AbDecision",
            until=lambda r: any(x["decision_id"] == did and x["status"] == "winner"
                                and x["arms"] == arms for x in r), timeout_s=60)
        latest = [r for r in records if r["campaign_id"] == campaign][-1]
        assert (latest["status"], latest["winner"], latest["version"],
                latest["decision_id"]) == ("winner", "B", version, did)
        assert latest["arms"] == arms
    finally:
        for job_id in ids.values():
            with contextlib.suppress(OSError):
                flink_rest.cancel(config, job_id)
