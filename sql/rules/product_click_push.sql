-- rule: product_click_push
-- detects: a person opens an email and clicks a product link within 5 minutes, and has
--   not bought that product in the 30 days before the click
-- action: push_offer
-- description: Real-time push offer for the product the subscriber just looked at.
--   One trigger per product click that follows an open; machine opens and bot clicks
--   do not count.
-- flink: MATCH_RECOGNIZE (open, then product click, within 5 minutes), then an interval
--   LEFT JOIN on conversions used as an anti-join (no purchase of that product in the
--   30 days up to the click)
INSERT INTO journey_triggers
SELECT
    SHA256(CONCAT_WS('|', 'product_click_push', m.subscriber_id, m.open_id, m.click_id))
        AS trigger_id,
    'product_click_push' AS rule_id,
    m.subscriber_id,
    m.campaign_id,
    'push_offer' AS action,
    JSON_OBJECT(KEY 'product_id' VALUE m.product_id, KEY 'url' VALUE m.url,
                KEY 'open_event_id' VALUE m.open_id, KEY 'click_event_id' VALUE m.click_id)
        AS payload,
    m.click_time AS event_time
FROM (
    SELECT subscriber_id, event_type, event_id, event_time, campaign_id, product_id, url, ts
    FROM clean_events
    WHERE is_human
) MATCH_RECOGNIZE (
    PARTITION BY subscriber_id
    ORDER BY ts
    MEASURES
        O.event_id AS open_id,
        C.event_id AS click_id,
        C.campaign_id AS campaign_id,
        C.product_id AS product_id,
        C.url AS url,
        C.event_time AS click_time,
        MATCH_ROWTIME(ts) AS match_ts
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (O X*? C) WITHIN INTERVAL '5' MINUTE
    DEFINE
        O AS O.event_type = 'open',
        C AS C.event_type = 'click' AND C.product_id IS NOT NULL
) AS m
LEFT JOIN conversions AS bought
    ON bought.subscriber_id = m.subscriber_id
    AND bought.product_id = m.product_id
    AND bought.ts BETWEEN m.match_ts - INTERVAL '30' DAY AND m.match_ts
WHERE bought.subscriber_id IS NULL;
