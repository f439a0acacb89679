"""The frames a shared payload goes out in, built here only.

A shared execution encodes each result once (`payload`); a subscriber's
frame wraps it with what is its own: the operation id, in the shape of its
transport. `Framing.frame(payload)` is `prefix + payload + suffix`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Framing:
    prefix: bytes
    suffix: bytes

    def frame(self, payload: bytes) -> bytes:
        return self.prefix + payload + self.suffix


_OBJECT_END = b"}"


def transport_ws_next(operation_id: str) -> Framing:
    """graphql-transport-ws: `{"id":…,"type":"next","payload":…}`."""
    prefix = b'{"id":' + orjson.dumps(operation_id) + b',"type":"next","payload":'
    return Framing(prefix, _OBJECT_END)


def legacy_ws_data(operation_id: str) -> Framing:
    """graphql-ws (subscriptions-transport-ws): `{"type":"data","id":…,"payload":…}`."""
    prefix = b'{"type":"data","id":' + orjson.dumps(operation_id) + b',"payload":'
    return Framing(prefix, _OBJECT_END)


def sse_data(operation_id: str | None) -> Framing:
    """An SSE event's data: the payload itself (distinct connections mode),
    or `{"id":…,"payload":…}` (single connection mode)."""
    if operation_id is None:
        return Framing(b"", b"")
    return Framing(b'{"id":' + orjson.dumps(operation_id) + b',"payload":', _OBJECT_END)


def sse_event(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE event whose data is `data`, JSON already encoded (orjson never
    writes a raw line break)."""
    head = b"" if event_id is None else b"id: " + event_id.encode() + b"\n"
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
