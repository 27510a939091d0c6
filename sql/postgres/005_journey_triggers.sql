-- Journey triggers of the rules job (jobs/rules, sql/rules/*.sql), one row per trigger.
-- The job upserts on trigger_id, which is a hash of the rule, the subscriber and the
-- matched events: a replay rewrites the same rows instead of adding new ones, and
-- created_at (not written by the job) keeps the time the trigger was first stored.
-- Columns mirror avro/JourneyTrigger.avsc; event_time is UTC epoch ms of event time.
CREATE TABLE IF NOT EXISTS journey_triggers (
    trigger_id    TEXT        NOT NULL PRIMARY KEY,
    rule_id       TEXT        NOT NULL,
    subscriber_id TEXT        NOT NULL,
    campaign_id   TEXT,
    action        TEXT        NOT NULL,
    payload       TEXT        NOT NULL,  -- a JSON object (text: the JDBC sink writes strings)
    event_time    BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS journey_triggers_subscriber ON journey_triggers (subscriber_id);
CREATE INDEX IF NOT EXISTS journey_triggers_rule_time ON journey_triggers (rule_id, event_time);
