-- Live campaign metrics per campaign, A/B test and arm: one row per minute of event time
-- (granularity 'minute', window_start = the minute in epoch ms) and one cumulative row
-- (granularity 'total', window_start 0). Written by jobs/metrics.py as upserts on the
-- primary key, so a late event corrects its row and a replay rewrites the same rows.
-- Columns mirror avro/CampaignMetrics.avsc. Rates are over delivered (NULL until then).
CREATE TABLE IF NOT EXISTS campaign_metrics (
    campaign_id          TEXT             NOT NULL,
    ab_test_id           TEXT             NOT NULL,  -- '' when not an A/B test
    arm                  TEXT             NOT NULL,  -- '' when not an A/B test
    granularity          TEXT             NOT NULL CHECK (granularity IN ('minute', 'total')),
    window_start         BIGINT           NOT NULL,
    delivered            BIGINT           NOT NULL,
    deferred             BIGINT           NOT NULL,
    dropped              BIGINT           NOT NULL,
    bounces_hard         BIGINT           NOT NULL,
    bounces_soft         BIGINT           NOT NULL,
    complaints           BIGINT           NOT NULL,
    unsubscribes         BIGINT           NOT NULL,
    unique_human_opens   BIGINT           NOT NULL,
    unique_machine_opens BIGINT           NOT NULL,
    unique_clicks        BIGINT           NOT NULL,
    bot_clicks           BIGINT           NOT NULL,
    conversions          BIGINT           NOT NULL,
    conversion_value     DOUBLE PRECISION NOT NULL,
    open_rate            DOUBLE PRECISION,
    click_rate           DOUBLE PRECISION,
    conversion_rate      DOUBLE PRECISION,
    bounce_rate          DOUBLE PRECISION,
    complaint_rate       DOUBLE PRECISION,
    unsubscribe_rate     DOUBLE PRECISION,
    PRIMARY KEY (campaign_id, ab_test_id, arm, granularity, window_start)
);
