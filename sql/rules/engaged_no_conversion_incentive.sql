-- rule: engaged_no_conversion_incentive
-- detects: a subscriber who keeps opening and clicking (engagement tier 'engaged' at the
--   time of the open) but has not converted in the last 30 days opens an email
-- action: send_incentive
-- description: One-time incentive (e.g. a discount code) sent right after the next human
--   open. At most one trigger per subscriber, ever: the trigger id is the rule and the
--   subscriber only, and later opens of the same subscriber are dropped.
-- flink: event-time temporal join with the versioned engagement_scores view (tier as of
--   the open), interval LEFT JOIN on conversions as an anti-join (none in 30 days), and
--   keep-first deduplication (ROW_NUMBER over processing time) for "one-time"
INSERT INTO journey_triggers
SELECT trigger_id, rule_id, subscriber_id, campaign_id, action, payload, event_time
FROM (
    SELECT
        SHA256(CONCAT_WS('|', 'engaged_no_conversion_incentive', o.subscriber_id))
            AS trigger_id,
        'engaged_no_conversion_incentive' AS rule_id,
        o.subscriber_id,
        o.campaign_id,
        'send_incentive' AS action,
        JSON_OBJECT(KEY 'open_event_id' VALUE o.event_id, KEY 'tier' VALUE o.tier,
                    KEY 'score' VALUE o.score, KEY 'days_without_conversion' VALUE 30)
            AS payload,
        o.event_time,
        ROW_NUMBER() OVER (PARTITION BY o.subscriber_id ORDER BY PROCTIME()) AS nth
    FROM (
        SELECT e.subscriber_id, e.campaign_id, e.event_id, e.event_time, e.ts, s.tier,
               s.score
        FROM clean_events AS e
        JOIN engagement_scores FOR SYSTEM_TIME AS OF e.ts AS s
            ON s.subscriber_id = e.subscriber_id
        WHERE e.event_type = 'open' AND e.is_human AND s.tier = 'engaged'
    ) AS o
    LEFT JOIN conversions AS c
        ON c.subscriber_id = o.subscriber_id
        AND c.ts BETWEEN o.ts - INTERVAL '30' DAY AND o.ts
    WHERE c.subscriber_id IS NULL
)
WHERE nth = 1;
