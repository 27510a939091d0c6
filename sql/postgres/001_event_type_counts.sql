-- Per campaign and event type: how many normalized events the normalize job has seen.
-- Written by jobs/normalize.py through the Flink JDBC connector as upserts on the primary
-- key, so a replay after a failure overwrites rows instead of adding to them.
-- campaign_id is '' for events that carry no campaign.
CREATE TABLE IF NOT EXISTS event_type_counts (
    campaign_id  TEXT        NOT NULL,
    event_type   TEXT        NOT NULL,
    events       BIGINT      NOT NULL,
    PRIMARY KEY (campaign_id, event_type)
);
