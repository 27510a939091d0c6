"""The local stack: a Kafka broker (KRaft), PostgreSQL and a Flink standalone cluster on
loopback ports, started from the jars in jars/ and the PyPI wheels in the venv.
Command line: python -m stack start|stop|status|topics."""
