"""`id:` lines and `Last-Event-ID` resume for `roomMessages` over SSE.

Every room message event goes out with its cursor as the SSE event id, so a
client (or a browser's EventSource) that reconnects with the standard
`Last-Event-ID` header resumes exactly after the last message it saw.

Both work on the request's document text, before Strawberry parses it:
- the cursor is read from the `roomMessages` payload; when the client did not
  select `cursor`, the field is added to its selection (just before the
  closing brace, so error locations elsewhere do not move) and removed from
  each payload again;
- `Last-Event-ID` becomes the `after` argument: it sets the `after` variable,
  or replaces a literal `after`, or is added to the arguments.

The document is checked as every path checks it (schema/document_cache.py:
the limits first, then validation; from the schema's store when it was seen
before). A document that does not pass, or whose operation is not a
`roomMessages` subscription, is passed through untouched; Strawberry
reports its errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    FieldNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
)

from schema import ValidDocuments

ROOM_MESSAGES = "roomMessages"
_CURSOR = "cursor"
_AFTER = "after"


@dataclass(frozen=True, slots=True)
class Resumable:
    """The document to execute and how to find each event's id in its results."""

    query: str | None
    variables: dict[str, Any] | None
    root_key: str | None = None  # response key of `roomMessages`, if it is one
    strip_cursor: bool = False  # `cursor` was added by us: remove it from payloads

    def event_id(self, payload: dict[str, Any]) -> str | None:
        """The cursor of a room message result (removed if we added it)."""
        if self.root_key is None:
            return None
        data = payload.get("data")
        if not isinstance(data, dict):
            return None
        message = data.get(self.root_key)
        if not isinstance(message, dict):
            return None
        cursor = message.pop(_CURSOR, None) if self.strip_cursor else message.get(_CURSOR)
        return cursor if isinstance(cursor, str) and _valid_id(cursor) else None


def _valid_id(value: str) -> bool:
    # An SSE id field ends at a line break; a NUL makes browsers ignore it.
    return not any(c in value for c in "\r\n\0")


def prepare(
    documents: ValidDocuments,
    query: str | None,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    last_event_id: str | None,
) -> Resumable:
    """Rewrite a `roomMessages` subscription for ids and `Last-Event-ID`."""
    if not query:
        return Resumable(query, variables)
    # Checked (and, when valid, kept) as Strawberry will check it: an
    # unchanged document is then not parsed twice.
    document = documents.check(query)
    if isinstance(document, list):
        return Resumable(query, variables)
    operation = _operation(document.definitions, operation_name)
    if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
        return Resumable(query, variables)
    field = next(
        (
            node
            for node in operation.selection_set.selections
            if isinstance(node, FieldNode) and node.name.value == ROOM_MESSAGES
        ),
        None,
    )
    if field is None or field.selection_set is None or field.loc is None:
        return Resumable(query, variables)

    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in `query`
    strip = False
    selected = {
        (node.alias or node.name).value: node.name.value
        for node in field.selection_set.selections or ()
        if isinstance(node, FieldNode)
    }
    id_key: str | None = field.alias.value if field.alias else field.name.value
    if _CURSOR not in selected:
        end = _loc_end(field.selection_set)
        edits.append((end - 1, end - 1, f" {_CURSOR} "))
        strip = True
    elif selected[_CURSOR] != _CURSOR:
        id_key = None  # `cursor` is the alias of another field: no ids

    if last_event_id is not None:
        literal = orjson.dumps(last_event_id).decode()
        arguments = field.arguments or ()
        after = next((arg for arg in arguments if arg.name.value == _AFTER), None)
        if after is not None and isinstance(after.value, VariableNode):
            variables = {**(variables or {}), after.value.name.value: last_event_id}
        elif after is not None and after.value.loc is not None:
            edits.append((after.value.loc.start, after.value.loc.end, literal))
        elif arguments and arguments[0].loc is not None:
            start = arguments[0].loc.start
            edits.append((start, start, f"{_AFTER}: {literal} "))
        else:
            end = _loc_end(field.name)
            edits.append((end, end, f"({_AFTER}: {literal})"))

    for start, end, text in sorted(edits, reverse=True):
        query = query[:start] + text + query[end:]
    return Resumable(query, variables, id_key, strip)


def _operation(definitions: Any, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == name), None)


def _loc_end(node: Any) -> int:
    end: int = node.loc.end
    return end
