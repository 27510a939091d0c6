-- rule: mail_fatigue_throttle
-- detects: mail fatigue: on one day (UTC) a subscriber got three or more emails and
--   opened or clicked none of them
-- action: reduce_frequency
-- description: Lower the subscriber's send frequency (or move them to a digest) before
--   fatigue turns into unsubscribes and complaints. Decided once per day, when the day
--   is over in event time.
-- flink: window TVF (TUMBLE of one day per subscriber) with a HAVING threshold
INSERT INTO journey_triggers
SELECT
    SHA256(CONCAT_WS('|', 'mail_fatigue_throttle', subscriber_id,
                     DATE_FORMAT(window_start, 'yyyy-MM-dd'))) AS trigger_id,
    'mail_fatigue_throttle' AS rule_id,
    subscriber_id,
    CAST(NULL AS STRING) AS campaign_id,
    'reduce_frequency' AS action,
    -- The day is event_time minus one day; payloads hold no absolute times (see README).
    JSON_OBJECT(KEY 'delivered' VALUE delivered, KEY 'campaigns' VALUE campaigns) AS payload,
    UNIX_TIMESTAMP(DATE_FORMAT(window_end, 'yyyy-MM-dd HH:mm:ss')) * 1000 AS event_time
FROM (
    SELECT
        window_start, window_end, subscriber_id,
        COUNT(*) FILTER (WHERE event_type = 'delivered') AS delivered,
        COUNT(DISTINCT campaign_id) FILTER (WHERE event_type = 'delivered') AS campaigns,
        COUNT(*) FILTER (WHERE is_human) AS engaged
    FROM TABLE(TUMBLE(TABLE clean_events, DESCRIPTOR(ts), INTERVAL '1' DAY))
    GROUP BY window_start, window_end, subscriber_id
)
WHERE delivered >= 3 AND engaged = 0;
