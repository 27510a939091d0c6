package email.bench;

import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.format.DateTimeParseException;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.types.Row;

/**
 * Baseline (a) of the benchmark: one raw webhook body in, one row per provider event out,
 * with the fields the baseline's SQL deduplicates and counts by. Each body is parsed once
 * (SES twice: its SNS envelope carries the event as a JSON string), where the pure-SQL
 * version re-parsed it for each of ~45 JSON_VALUE calls.
 *
 * <p>The field paths are the ones the pure-SQL version used (first present wins), so both
 * extract the same values; a body that does not parse yields no rows, as JSON_QUERY's NULL
 * did. Raw type and event id stay raw: the SQL maps them (bench/java_baseline.py).
 */
@FunctionHint(output = @DataTypeHint(
        "ROW<raw_type STRING, pid STRING, event_time BIGINT, message_id STRING, "
                + "subscriber_id STRING, campaign_id STRING, ab_test_id STRING, arm STRING, "
                + "url STRING, severity STRING>"))
public class ParseRaw extends TableFunction<Row> {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String MANDRILL_PREFIX = "mandrill_events=";
    private static final String[] SPARKPOST_CLASSES =
            {"message_event", "track_event", "unsubscribe_event"};
    private static final String[][] RAW_TYPE = {{"event"}, {"eventType"}, {"RecordType"},
            {"type"}};
    private static final String[][] PROVIDER_ID = {{"sg_event_id"}, {"id"}, {"event_id"},
            {"_id"}, {"hit_id"}};
    private static final String[][] ISO_TIME = {{"delivery", "timestamp"},
            {"open", "timestamp"}, {"click", "timestamp"}, {"bounce", "timestamp"},
            {"complaint", "timestamp"}, {"deliveryDelay", "timestamp"},
            {"mail", "timestamp"}, {"DeliveredAt"}, {"ReceivedAt"}, {"BouncedAt"},
            {"ChangedAt"}};
    private static final String[][] EPOCH_S = {{"timestamp"}, {"ts"}};
    private static final String[][] MESSAGE_ID = {{"sg_message_id"},
            {"message", "headers", "message-id"}, {"mail", "messageId"}, {"MessageID"},
            {"message_id"}, {"msg", "_id"}};
    private static final String[][] URL = {{"url"}, {"click", "link"}, {"OriginalLink"},
            {"target_link_url"}};
    // Where each provider keeps the sender's metadata; [0] at the top (SendGrid, tracker).
    private static final String[][] META_PARENT = {{}, {"user-variables"}, {"mail", "tags"},
            {"Metadata"}, {"rcpt_meta"}, {"msg", "metadata"}};

    public void eval(String provider, byte[] body) {
        if (provider == null || body == null) {
            return;
        }
        try {
            switch (provider) {
                case "sendgrid", "sparkpost" -> eachOf(provider, JSON.readTree(body));
                case "mandrill" -> {
                    String form = new String(body, StandardCharsets.UTF_8);
                    if (form.startsWith(MANDRILL_PREFIX)) {
                        eachOf(provider, JSON.readTree(URLDecoder.decode(
                                form.substring(MANDRILL_PREFIX.length()),
                                StandardCharsets.UTF_8)));
                    }
                }
                case "ses" -> {
                    JsonNode message = JSON.readTree(body).get("Message");
                    if (message != null && message.isTextual()) {
                        emit(provider, JSON.readTree(message.asText()));
                    }
                }
                case "mailgun" -> emit(provider, JSON.readTree(body).get("event-data"));
                default -> emit(provider, JSON.readTree(body));
            }
        } catch (java.io.IOException | IllegalArgumentException e) {
            // A broken body: the project's pipeline dead-letters it; the baseline drops it.
        }
    }

    private void eachOf(String provider, JsonNode batch) {
        if (batch == null || !batch.isArray()) {
            return;
        }
        for (JsonNode item : batch) {
            if ("sparkpost".equals(provider)) {
                JsonNode msys = item.path("msys");
                JsonNode event = null;
                for (String cls : SPARKPOST_CLASSES) {
                    if (msys.has(cls)) {
                        event = msys.get(cls);
                        break;
                    }
                }
                emit(provider, event);
            } else {
                emit(provider, item);
            }
        }
    }

    private void emit(String provider, JsonNode ev) {
        if (ev == null || !ev.isObject()) {
            return;
        }
        collect(Row.of(first(ev, RAW_TYPE), first(ev, PROVIDER_ID), eventTime(provider, ev),
                first(ev, MESSAGE_ID), meta(ev, "subscriber_id"), meta(ev, "campaign_id"),
                meta(ev, "ab_test_id"), meta(ev, "arm"), first(ev, URL),
                scalar(ev.get("severity"))));
    }

    private static Long eventTime(String provider, JsonNode ev) {
        switch (provider) {
            case "tracker" -> {
                JsonNode ts = ev.get("ts");
                return ts != null && ts.isNumber() ? ts.asLong() : null;
            }
            case "ses", "postmark" -> {
                String iso = first(ev, ISO_TIME);
                try {
                    return iso == null ? null : Instant.parse(iso).toEpochMilli();
                } catch (DateTimeParseException e) {
                    return null;
                }
            }
            default -> {
                String seconds = first(ev, EPOCH_S);
                try {
                    return seconds == null ? null
                            : (long) (1000 * Double.parseDouble(seconds));
                } catch (NumberFormatException e) {
                    return null;
                }
            }
        }
    }

    /** The first path (of field names) that ends at a scalar, as text (JSON_VALUE). */
    private static String first(JsonNode ev, String[][] paths) {
        for (String[] path : paths) {
            JsonNode node = ev;
            for (String name : path) {
                node = node.path(name);
            }
            String value = scalar(node);
            if (value != null) {
                return value;
            }
        }
        return null;
    }

    private static String meta(JsonNode ev, String name) {
        for (String[] parent : META_PARENT) {
            JsonNode node = ev;
            for (String step : parent) {
                node = node.path(step);
            }
            node = node.path(name);
            // SES message tags are lists of values: the first one counts.
            String value = scalar(node.isArray() ? node.path(0) : node);
            if (value != null) {
                return value;
            }
        }
        return null;
    }

    private static String scalar(JsonNode node) {
        return node == null || !node.isValueNode() || node.isNull() ? null : node.asText();
    }
}
