"""Client-side helpers shared by the demo, the end-to-end tests and the benchmark:
produce raw webhooks to Kafka, read Avro records back, query PostgreSQL, manage jobs."""
