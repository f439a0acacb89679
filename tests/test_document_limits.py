"""schema/document_limits.py and the store: the limits measure what
Strawberry's limiters measure, in time linear in the document, and the store
of valid documents stays bounded."""

from __future__ import annotations

from graphql import DocumentNode, GraphQLError, parse, validate
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from core.settings import Settings
from schema import ValidDocuments, build_schema
from schema.document_cache import token_count
from schema.document_limits import DocumentLimits
from transport.adapters.uvicorn import (
    FALLBACK_HTTP,
    FALLBACK_WS,
    HTTP_PROTOCOL,
    WS_PROTOCOL,
    protocol_options,
)

# Documents whose depth and aliases both implementations must agree on.
CORPUS = [
    "{ me }",
    "{ a: me b: me }",
    '{ history(roomId: "r") { edges { node { id } } } }',
    '{ h: history(roomId: "r") { e: edges { n: node { id } } } }',
    "{ __typename }",
    "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }",
    '{ history(roomId: "r") { ...Page } } fragment Page on MessagePage { edges { node { id } } }',
    '{ history(roomId: "r") { ... on MessagePage { edges { x: node { id } } } } }',
    "query A { a: me } query B { b: me c: me } subscription S { x: typing(roomId: 1) { userId } }",
    '{ ...Q ...Q } fragment Q on Query { a: me history(roomId: "r") { edges { node { id } } } }',
    '{ room(id: "r") { ...R } } fragment R on Room { id y: name ...S } '
    "fragment S on Room { z: id }",
    "{ ...Missing }",
]


def strawberry_errors(document: DocumentNode, depth: int, aliases: int) -> list[str]:
    rules = [
        *QueryDepthLimiter(max_depth=depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=aliases).validation_rules,
    ]
    return sorted({e.message for e in validate(build_schema().graphql_core, document, rules)})


def our_errors(document: DocumentNode, depth: int, aliases: int) -> list[str]:
    limits = DocumentLimits(
        max_bytes=1 << 20, max_tokens=5000, max_depth=depth, max_aliases=aliases
    )
    return sorted({e.message for e in limits.problems(document)})


def test_depth_and_aliases_measured_as_strawberry_does() -> None:
    for query in CORPUS:
        if "Missing" in query:
            continue  # Strawberry's depth limiter raises KeyError on it
        document = parse(query)
        for depth in (0, 1, 2, 3, 4):
            for aliases in (0, 1, 2, 3):
                assert our_errors(document, depth, aliases) == strawberry_errors(
                    document, depth, aliases
                ), (query, depth, aliases)


def test_unknown_fragment_is_left_to_validation() -> None:
    schema = build_schema()
    errors = schema.documents.check("{ ...Missing }")
    assert isinstance(errors, list)
    assert [e.message for e in errors] == ["Unknown fragment 'Missing'."]


def test_fragment_spreads_are_measured_once() -> None:
    # 60 fragments, each spreading the next twice: 2^60 walks for
    # Strawberry's limiters (they never finish); one each here.
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(60))
    query = "{ ...F0 } " + chain + " fragment F60 on Query { a: me }"
    errors = build_schema(max_aliases=30).documents.check(query)
    assert isinstance(errors, list)
    assert [e.message for e in errors] == ["More than 1000000000000 aliases found. Allowed: 30"]
    cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { me ...A }"
    errors = build_schema().documents.check(cycle)
    assert isinstance(errors, list)
    assert "Cannot spread fragment 'A' within itself via 'B'." in [e.message for e in errors]


def test_size_and_tokens_come_before_parsing_and_validation() -> None:
    documents = build_schema(max_bytes=2048, max_tokens=50).documents
    too_big = documents.check("{ me }" + " " * 2048)
    assert isinstance(too_big, list)
    assert too_big[0].message == "The document is larger than 2048 bytes"
    assert too_big[0].extensions == {"code": "PAYLOAD_TOO_LARGE"}
    # Multi-byte characters count as bytes, not characters.
    assert isinstance(documents.check("{ me } # " + "é" * 1100), list)
    many = documents.check("{ " + "nope " * 60 + "}")
    assert isinstance(many, list)
    assert many[0].message == (
        "Syntax Error: Document contains more than 50 tokens. Parsing aborted."
    )
    try:
        documents.parse("{ " + "me " * 60 + "}")
    except GraphQLError as error:
        assert "more than 50 tokens" in error.message
    else:
        raise AssertionError("parsed past the token limit")


def test_the_store_keeps_only_valid_documents_and_is_bounded_in_tokens() -> None:
    schema = build_schema()
    documents_small = ValidDocuments(
        schema.documents.limits, schema.documents.strawberry, max_entries=100, max_tokens=40
    )
    documents_small.bind(schema.graphql_core)
    first = "{ a: me }"  # 6 tokens with start and end
    assert isinstance(documents_small.check(first), DocumentNode)
    assert documents_small.get(first) is not None
    assert isinstance(documents_small.check("{ nope }"), list)
    assert documents_small.get("{ nope }") is None
    for i in range(10):  # 60 tokens more than the 40 it may hold
        assert isinstance(documents_small.check(f"{{ a{i}: me }}"), DocumentNode)
    assert documents_small.get(first) is None  # the oldest went
    assert documents_small.get("{ a9: me }") is not None


def test_request_limit_fits_the_largest_message() -> None:
    settings = Settings()
    assert settings.request_byte_limit == 3 * 65536 + 65536
    assert Settings(max_message_size=1 << 20).request_byte_limit == 3 * (1 << 20) + 65536
    assert Settings(max_request_bytes=4096).request_byte_limit == 4096


def test_other_uvicorn_versions_run_uvicorns_own_protocols() -> None:
    assert protocol_options("0.54.0") == (HTTP_PROTOCOL, WS_PROTOCOL)
    assert protocol_options("0.99.1") == (FALLBACK_HTTP, FALLBACK_WS)


TOKENS_CORPUS = [
    *CORPUS,
    '{ a: history(roomId: "say \\"hi\\", #not a comment") { edges { cursor } } }',
    "# a comment { with braces }\n{ me } # another",
    'mutation { sendMessage(input: {roomId: "r", data: {n: -1.5e3, ok: true, x: null}}) { id } }',
    'query Q($a: [ID!]! = ["x"], $b: Int = 0) @d { f(a: $a, b: $b) { ...on X { y } } }',
    '{ f(s: """block "quoted" \\""" still "" inside""") }',
    '{ f(s: """\nmulti\nline\n""") , g }',
]


def test_tokens_are_counted_before_parsing_exactly_as_the_parser_counts() -> None:
    for query in TOKENS_CORPUS:
        counted = token_count(parse(query)) - 2  # the start and end of the document
        for limit in (counted - 1, counted):
            limits = DocumentLimits(max_bytes=1 << 20, max_tokens=limit, max_depth=9, max_aliases=9)
            padded = query + " " * limit  # long enough to be counted at all
            refusal = limits.refusal(padded)
            try:
                parse(padded, max_tokens=limit)
            except GraphQLError as error:
                assert refusal is not None, (query, limit)
                assert refusal.message == error.message
                assert refusal.locations == error.locations, query
            else:
                assert refusal is None, (query, limit)


def test_counting_tokens_is_linear_whatever_the_document_holds() -> None:
    limits = DocumentLimits(max_bytes=1 << 20, max_tokens=5000, max_depth=9, max_aliases=9)
    # Unterminated strings and escaped quotes, which a backtracking pattern
    # would scan again from every quote.
    for hostile in ('"\\"' * 100_000, '"""' + '\\"' * 100_000, '"a' * 100_000):
        assert limits.refusal(hostile) is not None or parse_fails(hostile)


def parse_fails(query: str) -> bool:
    try:
        parse(query, max_tokens=5000)
    except GraphQLError:
        return True
    return False


async def test_strawberry_refuses_unparsed_what_is_over_the_limits() -> None:
    schema = build_schema(max_tokens=50, max_bytes=4096)
    many = "query Q { " + "me " * 60 + "}"
    refused = "Syntax Error: Document contains more than 50 tokens. Parsing aborted."
    for name in (None, "Q", "Other"):
        result = await schema.execute(many, operation_name=name)
        assert result.errors is not None
        assert [e.message for e in result.errors] == [refused], name
        assert result.errors[0].extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}
        assert schema.documents.get(many) is None
    result = await schema.execute("{ me }" + " " * 4096)
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "PAYLOAD_TOO_LARGE"}
