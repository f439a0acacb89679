"""The NATS backend: every role on NATS with JetStream (nats:// or tls://).

It exports what the factory (backends/factory.py) opens. The modules: link
(the connection and key-value buckets), history (messages), one module per
other role (rooms, channels, presence, typing_indicators, rate_limits),
quotas (the per-user quota documents rooms and channels share), backend (the
URL, the server check, the opening).

Each record that must change atomically is one KV document changed by
compare-and-set (`Bucket.mutate`), so every rule holds across nodes:

    state bucket (no TTL)            live bucket (TTL: idle keys vanish)
    room.<room>    room, members, bans   conns.<user>   connections + expiry
    joined.<user>  rooms joined (quota)  typing.<room>  typists + expiry
    added.<user>   rooms others added the user to (the additions quota)
    chan.<chan>    channel and grants    rate.<key>     sliding window log
    chanby.<user>  channels created
    status.<user>  chosen status, last seen
"""

from .backend import delete_namespace, open_stores

__all__ = ["delete_namespace", "open_stores"]
