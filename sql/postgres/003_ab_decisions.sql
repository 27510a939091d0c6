-- A/B/n winner decisions, written by jobs/abtest.py (columns mirror avro/AbDecision.avsc).
-- ab_decisions: the current decision per (campaign, A/B test), upserted at every look where
-- the decision or the per-arm counts changed, so campaign tools read one row per test.
-- ab_decision_history: one row per decision version (status or winner changed), keyed by
-- the deterministic decision_id, so a replay rewrites the same rows and an audit can see
-- when "collecting" became "winner" and on which numbers.
-- arms is JSON text (one object per arm: n, successes, rate, p-values, P(best), expected
-- loss); TEXT rather than JSONB because the Flink JDBC sink binds strings as varchar,
-- which PostgreSQL does not cast to jsonb implicitly. Query it with arms::jsonb.
CREATE TABLE IF NOT EXISTS ab_decisions (
    campaign_id  TEXT             NOT NULL,
    ab_test_id   TEXT             NOT NULL,
    decision_id  TEXT             NOT NULL,
    version      BIGINT           NOT NULL,
    status       TEXT             NOT NULL
                 CHECK (status IN ('collecting', 'winner', 'deadline_best', 'srm_alert')),
    winner       TEXT,                        -- NULL unless winner / deadline_best
    significant  BOOLEAN          NOT NULL,   -- true only for status 'winner'
    metric       TEXT             NOT NULL CHECK (metric IN ('clicks', 'opens', 'conversions')),
    control_arm  TEXT             NOT NULL,
    alpha        DOUBLE PRECISION NOT NULL,
    decided_at   BIGINT           NOT NULL,   -- event time (epoch ms) of the current decision
    look_time    BIGINT           NOT NULL,   -- event time (epoch ms) of the latest look
    srm_chi2     DOUBLE PRECISION,
    srm_p_value  DOUBLE PRECISION,
    arms         TEXT             NOT NULL,   -- JSON array, see above
    PRIMARY KEY (campaign_id, ab_test_id)
);

CREATE TABLE IF NOT EXISTS ab_decision_history (
    decision_id  TEXT             NOT NULL,
    campaign_id  TEXT             NOT NULL,
    ab_test_id   TEXT             NOT NULL,
    version      BIGINT           NOT NULL,
    status       TEXT             NOT NULL
                 CHECK (status IN ('collecting', 'winner', 'deadline_best', 'srm_alert')),
    winner       TEXT,
    significant  BOOLEAN          NOT NULL,
    metric       TEXT             NOT NULL CHECK (metric IN ('clicks', 'opens', 'conversions')),
    control_arm  TEXT             NOT NULL,
    alpha        DOUBLE PRECISION NOT NULL,
    decided_at   BIGINT           NOT NULL,
    look_time    BIGINT           NOT NULL,
    srm_chi2     DOUBLE PRECISION,
    srm_p_value  DOUBLE PRECISION,
    arms         TEXT             NOT NULL,
    PRIMARY KEY (decision_id)
);
CREATE INDEX IF NOT EXISTS ab_decision_history_test
    ON ab_decision_history (campaign_id, ab_test_id, version);
