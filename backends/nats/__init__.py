"""The NATS backend: every role on NATS with JetStream (nats:// or tls://).

It exports what the factory (backends/factory.py) opens; the modules: link
(the connection and key-value buckets), history (messages), stores (the
other roles), backend (the URL, the server check, the opening)."""

from .backend import delete_namespace, open_stores

__all__ = ["delete_namespace", "open_stores"]
