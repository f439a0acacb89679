"""The PostgreSQL backend: rooms, channels and history (postgresql://).

It exports what the factory (backends/factory.py) opens; the modules are
one per role (messages, rooms, channels) or concern: database (the pool and
error translation), migrations (the versioned schema), backend (the URL
and the opening)."""

from .backend import delete_namespace, open_stores

__all__ = ["delete_namespace", "open_stores"]
