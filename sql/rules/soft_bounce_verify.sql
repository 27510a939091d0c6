-- rule: soft_bounce_verify
-- detects: soft bounces piling up: a second soft bounce of the same address within 7
--   days of the first
-- action: verify_address
-- description: Flag the address for verification (mailbox check, ask for a new address)
--   before it reaches the suppression threshold of the subscriber job (3 in 7 days).
-- flink: MATCH_RECOGNIZE (two soft bounces within 7 days)
INSERT INTO journey_triggers
SELECT
    SHA256(CONCAT_WS('|', 'soft_bounce_verify', subscriber_id, first_bounce_id,
                     second_bounce_id)) AS trigger_id,
    'soft_bounce_verify' AS rule_id,
    subscriber_id,
    campaign_id,
    'verify_address' AS action,
    JSON_OBJECT(KEY 'soft_bounces' VALUE 2, KEY 'recipient_domain' VALUE recipient_domain,
                KEY 'first_bounce_event_id' VALUE first_bounce_id,
                KEY 'second_bounce_event_id' VALUE second_bounce_id) AS payload,
    second_bounce_time AS event_time
FROM (
    SELECT subscriber_id, event_id, event_time, campaign_id, recipient_domain, ts
    FROM clean_events
    WHERE event_type = 'bounce' AND bounce_class = 'soft'
) MATCH_RECOGNIZE (
    PARTITION BY subscriber_id
    ORDER BY ts
    MEASURES
        B1.event_id AS first_bounce_id,
        B2.event_id AS second_bounce_id,
        B2.event_time AS second_bounce_time,
        B2.campaign_id AS campaign_id,
        B2.recipient_domain AS recipient_domain
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (B1 B2) WITHIN INTERVAL '7' DAY
    DEFINE
        B1 AS TRUE,
        B2 AS TRUE
);
