"""`python -m jobs.rules deploy` decisions, without a cluster (REST and `flink run` faked)."""

from __future__ import annotations

import pytest

import settings
from jobs.rules import deploy
from jobs.rules.job import job_name
from stack.errors import StackError

CONFIG = settings.load(environ={})
NAME = job_name(CONFIG)


@pytest.fixture
def cluster(monkeypatch):
    calls: list[tuple] = []
    jobs: list[dict] = []
    monkeypatch.setattr(deploy, "list_jobs", lambda config: jobs)
    monkeypatch.setattr(deploy.flink_rest, "stop_with_savepoint",
                        lambda config, jid: calls.append(("stop", jid)) or f"file:/sp/{jid}")
    monkeypatch.setattr(deploy, "submit", lambda job, config, path, savepoint=None:
                        calls.append(("submit", job, savepoint)) or "new")
    return jobs, calls


def test_deploy_stops_the_running_job_with_a_savepoint_and_resumes_from_it(cluster):
    jobs, calls = cluster
    jobs += [{"jid": "old", "state": "RUNNING", "name": NAME},
             {"jid": "gone", "state": "CANCELED", "name": NAME},
             {"jid": "other", "state": "RUNNING", "name": "email-journey-rules [team-b]"}]
    result = deploy.deploy(CONFIG)
    assert result == deploy.Deployed("new", "old", "file:/sp/old")
    assert calls == [("stop", "old"), ("submit", "rules", "file:/sp/old")]


def test_deploy_without_a_job_submits(cluster):
    _, calls = cluster
    assert deploy.deploy(CONFIG) == deploy.Deployed("new")
    assert calls == [("submit", "rules", None)]


@pytest.mark.parametrize(("states", "message"), [
    (["RESTARTING"], "is RESTARTING: a savepoint needs a running job"),
    (["RUNNING", "INITIALIZING"], "2 jobs named"),
])
def test_deploy_refuses_what_it_cannot_replace_safely(cluster, states, message):
    jobs, calls = cluster
    jobs += [{"jid": f"j{i}", "state": s, "name": NAME} for i, s in enumerate(states)]
    with pytest.raises(StackError, match=message):
        deploy.deploy(CONFIG)
    assert calls == []
