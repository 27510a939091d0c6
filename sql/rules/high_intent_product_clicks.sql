-- rule: high_intent_product_clicks
-- detects: three product-page clicks by the same person within one hour
-- action: accelerate
-- description: High purchase intent: hand the subscriber to the accelerated journey (a
--   limited-time offer, or a sales call for high-value products). Every further three
--   clicks within an hour trigger again.
-- flink: MATCH_RECOGNIZE (three human product clicks within an hour)
INSERT INTO journey_triggers
SELECT
    SHA256(CONCAT_WS('|', 'high_intent_product_clicks', subscriber_id, first_click_id,
                     second_click_id, last_click_id)) AS trigger_id,
    'high_intent_product_clicks' AS rule_id,
    subscriber_id,
    campaign_id,
    'accelerate' AS action,
    JSON_OBJECT(KEY 'clicks' VALUE 3,
                KEY 'products' VALUE JSON_ARRAY(first_product, second_product, last_product),
                KEY 'first_click_event_id' VALUE first_click_id,
                KEY 'last_click_event_id' VALUE last_click_id) AS payload,
    last_click_time AS event_time
FROM (
    SELECT subscriber_id, event_id, event_time, campaign_id, product_id, ts
    FROM clean_events
    WHERE event_type = 'click' AND is_human AND product_id IS NOT NULL
) MATCH_RECOGNIZE (
    PARTITION BY subscriber_id
    ORDER BY ts
    MEASURES
        K1.event_id AS first_click_id,
        K2.event_id AS second_click_id,
        K3.event_id AS last_click_id,
        K1.product_id AS first_product,
        K2.product_id AS second_product,
        K3.product_id AS last_product,
        K3.campaign_id AS campaign_id,
        K3.event_time AS last_click_time
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (K1 K2 K3) WITHIN INTERVAL '1' HOUR
    DEFINE
        K1 AS TRUE,
        K2 AS TRUE,
        K3 AS TRUE
);
