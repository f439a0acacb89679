"""The Redis backend: every role on one Redis (redis:// or rediss://).

It exports what the factory (backends/factory.py) opens; the modules are
one per role or concern: broker (pub/sub), messages (history), rooms (rooms
and channels), ephemeral (presence, typing, rates), common (keys, scripts,
error translation), backend (the URL, the server check, the opening)."""

from .backend import delete_namespace, open_stores

__all__ = ["delete_namespace", "open_stores"]
