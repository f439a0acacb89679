"""The Accept header parser and chooser (transport/media_types.py), RFC 9110 §12.5.1."""

from __future__ import annotations

import pytest

from transport.media_types import (
    APPLICATION_JSON,
    EVENT_STREAM,
    GRAPHQL_RESPONSE_JSON,
    JSON_TYPES,
    Accept,
)

URQL = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)
APOLLO = "application/graphql-response+json,application/json;q=0.9"
OFFERS = (*JSON_TYPES, EVENT_STREAM)


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, APPLICATION_JSON),  # no header: anything, and `*/*` picks ours first
        ("", APPLICATION_JSON),
        ("   ", APPLICATION_JSON),
        ("*/*", APPLICATION_JSON),
        ("application/*", APPLICATION_JSON),
        ("application/json", APPLICATION_JSON),
        ("APPLICATION/JSON", APPLICATION_JSON),  # case-insensitive
        ("application/json; charset=utf-8", APPLICATION_JSON),  # parameters ignored
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (URQL, GRAPHQL_RESPONSE_JSON),  # equal weights: the client's order
        (APOLLO, GRAPHQL_RESPONSE_JSON),
        ("application/json, text/event-stream", APPLICATION_JSON),
        ("text/event-stream, application/json", EVENT_STREAM),
        ("application/json;q=0.5, text/event-stream", EVENT_STREAM),  # weights first
        ("text/event-stream;q=0.1, */*;q=0.2", APPLICATION_JSON),
        ("text/event-stream, */*", EVENT_STREAM),
        ("text/*", EVENT_STREAM),
        ("text/event-stream", EVENT_STREAM),
        # The most specific range decides: q=0 refuses a type `*/*` admits.
        ("application/json;q=0, */*", GRAPHQL_RESPONSE_JSON),
        ("*/*;q=0.5, application/graphql-response+json;q=0.4", APPLICATION_JSON),
        ('application/json;profile="a,b";q=0.3, text/event-stream;q=0.2', APPLICATION_JSON),
        ("application/json;q=1.000", APPLICATION_JSON),
    ],
)
def test_best_offer(header: str | None, chosen: str) -> None:
    assert Accept.parse(header).best(OFFERS) == chosen


@pytest.mark.parametrize(
    "header",
    [
        "text/html",
        "application/json;q=0",
        "application/json;q=0.000, text/event-stream;q=0",
        "*/*;q=0",
        "image/*, text/html;q=0.9",
        "nonsense",
        "application/json;q=2",  # not a qvalue: the element is ignored
        "application/json;q=0.1234",
        "application/json;q=-1",
        "application/json;q=",
        "*/json",
        "application/",
        "/json",
        ",,,",
    ],
)
def test_nothing_acceptable(header: str) -> None:
    accept = Accept.parse(header)
    assert accept.best(OFFERS) is None
    assert not any(accept.accepts(offer) for offer in OFFERS)


def test_malformed_elements_are_skipped_not_fatal() -> None:
    accept = Accept.parse("nonsense, application/json;q=7, text/event-stream;q=0.5")
    assert accept.best(OFFERS) == EVENT_STREAM
    assert accept.weight(APPLICATION_JSON) == 0


@pytest.mark.parametrize(
    ("header", "streams_single_results", "streams_subscriptions"),
    [
        (URQL, False, True),
        ("application/json, text/event-stream", False, True),
        ("text/event-stream", True, True),
        ("text/event-stream, application/json", True, True),
        ("application/json;q=0.9, text/event-stream", True, True),
        ("*/*", False, True),  # any type: subscriptions stream, queries get JSON
        (None, False, False),  # none on /graphql: application/json
        ("", False, False),
        ("application/json", False, False),
        ("application/json, text/event-stream;q=0", False, False),
        (APOLLO, False, False),
    ],
)
def test_when_to_stream(
    header: str | None, streams_single_results: bool, streams_subscriptions: bool
) -> None:
    accept = Accept.for_graphql(header)
    assert accept.prefers_event_stream() is streams_single_results
    assert accept.accepts(EVENT_STREAM) is streams_subscriptions


def test_weights() -> None:
    accept = Accept.parse("text/*;q=0.3, text/event-stream;q=0.7, */*;q=0.1")
    assert accept.weight(EVENT_STREAM) == 0.7
    assert accept.weight("text/plain") == 0.3
    assert accept.weight(APPLICATION_JSON) == 0.1


@pytest.mark.parametrize("header", [None, "", " "])
def test_no_header_accepts_anything_but_means_json_for_graphql(header: str | None) -> None:
    assert Accept.parse(header).accepts("text/plain")
    assert Accept.for_graphql(header).best(OFFERS) == APPLICATION_JSON
    assert not Accept.for_graphql(header).accepts(EVENT_STREAM)
