"""HTTP gateway: ESP webhooks and our tracking hits -> email.raw (raw bytes + headers).

Modules: ``signatures`` (pure per-provider authenticity checks), ``certs`` (SNS signing
certificates), ``replay`` (Mailgun token-replay rejection), ``tracking`` (signed pixel and
click tokens, the tracker hit JSON), ``config`` (the ``gateway`` settings section),
``kafka_writer`` (the acknowledged write), ``server`` (routes and HTTP). Start it with
``python -m gateway``.
"""
