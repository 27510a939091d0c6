-- Shared views for the journey rules in sql/rules/. Declared once here; every rule reads
-- these names, never the input tables below them, so the inputs can change in one place.
--
-- The runner (jobs/rules) declares the inputs before this file: in production Kafka
-- topics, in `python -m jobs.rules test` and `validate` in-memory tables of the same
-- columns. Each input has the rowtime `ts` (TIMESTAMP_LTZ(3)) with a watermark:
--   clean_events_in  email.events.clean      EmailEvent columns, ts = event_time
--   conversions_in   commerce.conversions    Conversion columns, ts = event_time
--   profiles_in      subscriber.profiles     SubscriberProfile columns, ts = updated_at
--   scores_in        subscriber.scores       SubscriberScore columns, ts = as_of
--
-- Statements end with a `;` at the end of a line.

-- Clean, deduplicated email events, plus what rules ask about them most often:
--   product_id  the product of a product link: the sender's `product_id` metadata, else
--               the path segment after /product/ or /products/ in the url; NULL otherwise
--   is_human    an open that is not a machine (Apple MPP) open, or a click, and not from a
--               suspected bot
CREATE TEMPORARY VIEW clean_events AS
SELECT
    event_id, provider, event_type, event_time, message_id, subscriber_id,
    recipient_domain, campaign_id, ab_test_id, `arm`, url, bounce_class, machine_open,
    suspected_bot, attributes,
    COALESCE(attributes['meta.product_id'],
             NULLIF(REGEXP_EXTRACT(url, '/products?/([A-Za-z0-9_.-]+)', 1), '')) AS product_id,
    (event_type IN ('open', 'click') AND machine_open IS NOT TRUE AND NOT suspected_bot)
        AS is_human,
    ts
FROM clean_events_in;

-- Purchases: orders from the shop (commerce.conversions, the system of record; they carry
-- no product) and conversions our tracker saw (a product when the link set one).
CREATE TEMPORARY VIEW conversions AS
SELECT order_id, subscriber_id, campaign_id, CAST(NULL AS STRING) AS product_id, `value`,
       event_time, ts
FROM conversions_in
UNION ALL
SELECT COALESCE(attributes['order_id'], event_id), subscriber_id, campaign_id, product_id,
       TRY_CAST(attributes['value'] AS DOUBLE), event_time, ts
FROM clean_events
WHERE event_type = 'conversion';

-- Every published profile version as an event (what changed, and when).
CREATE TEMPORARY VIEW profile_events AS
SELECT subscriber_id, time_zone, marketing_consent, tracking_consent, updated_at, ts
FROM profiles_in;

-- Subscriber profiles as a versioned table (primary key subscriber_id, version time ts):
-- join it with `FOR SYSTEM_TIME AS OF e.ts` to get the profile in effect at an event.
CREATE TEMPORARY VIEW subscriber_profiles AS
SELECT subscriber_id, time_zone, marketing_consent, tracking_consent, updated_at, ts
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY subscriber_id ORDER BY ts DESC) AS rn
    FROM profiles_in)
WHERE rn = 1;

-- Engagement scores (jobs/subscriber.py) as a versioned table: score and tier
-- (engaged, active, at_risk, dormant, unreachable) as of each event time.
CREATE TEMPORARY VIEW engagement_scores AS
SELECT subscriber_id, score, tier, last_human_engagement_time, as_of, ts
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY subscriber_id ORDER BY ts DESC) AS rn
    FROM scores_in)
WHERE rn = 1;
