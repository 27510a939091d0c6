-- rule: onboarding_completed_exit
-- detects: the subscriber completes the key onboarding action in their profile: a
--   profile version with confirmed marketing consent and a chosen time zone, right after
--   a version that lacked either
-- action: exit_onboarding
-- description: Take the subscriber out of the onboarding journey (stop the welcome
--   series) as soon as the profile says onboarding is done.
-- flink: MATCH_RECOGNIZE over the profile_events stream (an incomplete version followed
--   by a complete one)
INSERT INTO journey_triggers
SELECT
    SHA256(CONCAT_WS('|', 'onboarding_completed_exit', subscriber_id,
                     CAST(done_at AS STRING))) AS trigger_id,
    'onboarding_completed_exit' AS rule_id,
    subscriber_id,
    CAST(NULL AS STRING) AS campaign_id,
    'exit_onboarding' AS action,
    JSON_OBJECT(KEY 'time_zone' VALUE time_zone, KEY 'previous_version_at' VALUE pending_at)
        AS payload,
    done_at AS event_time
FROM profile_events
MATCH_RECOGNIZE (
    PARTITION BY subscriber_id
    ORDER BY ts
    MEASURES
        P.updated_at AS pending_at,
        D.updated_at AS done_at,
        D.time_zone AS time_zone
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (P D)
    DEFINE
        P AS NOT (P.marketing_consent IS TRUE AND P.time_zone IS NOT NULL),
        D AS D.marketing_consent IS TRUE AND D.time_zone IS NOT NULL
);
