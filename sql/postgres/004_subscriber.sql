-- Per-subscriber outputs of jobs/subscriber.py, one row per subscriber (PRIMARY KEY
-- subscriber_id), written as upserts: a replay rewrites the same rows. A row is deleted
-- when the subscriber is erased (privacy.erasure) and, in subscriber_suppressions, when
-- the suppression is lifted (a re-subscribe in subscriber.profiles lifts an unsubscribe).
-- Columns mirror avro/SubscriberScore.avsc, SubscriberSendTime.avsc and
-- SubscriberSuppression.avsc; times are UTC epoch milliseconds of event time.

-- Engagement score S(as_of) = sum of w_i * 2^(-(as_of - t_i) / half_life); for a later t
-- it is score * 2^(-(t - as_of) / half_life) until the row changes.
CREATE TABLE IF NOT EXISTS subscriber_scores (
    subscriber_id              TEXT             NOT NULL PRIMARY KEY,
    score                      DOUBLE PRECISION NOT NULL,
    tier                       TEXT             NOT NULL
        CHECK (tier IN ('engaged', 'active', 'at_risk', 'dormant', 'unreachable')),
    last_human_engagement_time BIGINT,           -- NULL: never engaged as a person
    as_of                      BIGINT           NOT NULL
);

-- Best send hour in the subscriber's local time (time_zone), with its confidence.
-- source 'population' = too little own data, the population's best hour is used.
CREATE TABLE IF NOT EXISTS subscriber_send_time (
    subscriber_id    TEXT             NOT NULL PRIMARY KEY,
    slot             INTEGER          NOT NULL,  -- local_weekday * 24 + local_hour (Mon 00h = 0)
    local_weekday    INTEGER,                    -- 0 = Monday; NULL for hour-of-day histograms
    local_hour       INTEGER          NOT NULL CHECK (local_hour BETWEEN 0 AND 23),
    time_zone        TEXT             NOT NULL,
    confidence       DOUBLE PRECISION NOT NULL,
    source           TEXT             NOT NULL CHECK (source IN ('subscriber', 'population')),
    effective_events DOUBLE PRECISION NOT NULL,
    as_of            BIGINT           NOT NULL
);

-- Active suppressions only: reason is the most severe active one, reasons lists all.
-- mail_scope 'all' blocks every mail, 'marketing' still allows transactional mail.
CREATE TABLE IF NOT EXISTS subscriber_suppressions (
    subscriber_id TEXT   NOT NULL PRIMARY KEY,
    reason        TEXT   NOT NULL
        CHECK (reason IN ('complaint', 'hard_bounce', 'soft_bounces', 'unsubscribe')),
    mail_scope    TEXT   NOT NULL CHECK (mail_scope IN ('all', 'marketing')),
    since         BIGINT NOT NULL,
    reasons       TEXT   NOT NULL               -- comma-separated, most severe first
);
