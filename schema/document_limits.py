"""The limits a GraphQL document must pass before anything else looks at it.

In this order, each bounding the work of the next: its size in bytes (no
parse at all over it), its tokens, then its depth and aliases, measured
here in one pass over the document (linear in its size, fragments included)
before any other validation runs.

Tokens are counted before parsing, by one regular expression that matches
the first `max_tokens + 1` tokens if there are that many (in C: about half a
millisecond for 5,000 tokens, where graphql-core's lexer takes some 20 µs a
token), so a document over the limit is refused without being parsed at
all, with graphql-core's own message and position, and the count stops at
the limit however long the document is. Each token is matched atomically
and its alternatives never give back what they consumed (possessive); an
unterminated string runs to the end of its line: the match is linear in the
document whatever it holds. The parser then enforces the limit exactly
(`max_tokens`, which counts comments too).

Strawberry's `QueryDepthLimiter` and `MaxAliasesLimiter` walk each fragment
again at every spread: a chain of fragments spreading the next one twice is
a few hundred tokens and takes them seconds (2^22 walks), then forever. Here
each fragment is measured once, whatever its spreads, without recursion
(a document may nest thousands of levels), with the same results and
messages as those limiters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    SourceLocation,
    parse,
)

_SHOWN_COUNT = 10**12  # larger alias counts are not written out in full

# One match per GraphQL token (spec section 2.1), comments included as
# graphql-core's `max_tokens` counts them; whitespace, commas and stray
# characters match nothing.
_TOKEN = re.compile(
    r"#[^\n\r]*+"  # a comment
    r'|"""(?:\\"""|[^"\\]|\\|"(?!""))*+(?:"""|\Z)'  # a block string
    r'|"(?:\\[^\n\r]|\\|[^"\\\n\r])*+(?:"|(?=[\n\r])|\Z)'  # a string
    r"|[_A-Za-z][_0-9A-Za-z]*+"  # a name
    r"|-?[0-9]++(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?"  # a number
    r"|\.\.\.|[!$&():=@\[\]{|}]"  # a punctuator
)
_IGNORED = r"[ \t\n\r,\ufeff]*+"


def _location(query: str, position: int) -> SourceLocation:
    """Line and column (from 1) of `position`, as graphql-core counts them
    (CRLF, LF or CR ends a line)."""
    lines = (
        query.count("\n", 0, position)
        + query.count("\r", 0, position)
        - query.count("\r\n", 0, position)
    )
    line_start = max(query.rfind("\n", 0, position), query.rfind("\r", 0, position)) + 1
    return SourceLocation(lines + 1, position - line_start + 1)


def _over_limit(max_tokens: int) -> re.Pattern[str]:
    """Matches the first `max_tokens` tokens and what is ignored after them
    when another token follows: its end is where that token starts."""
    token = f"(?:{_TOKEN.pattern})"
    return re.compile(f"(?>{_IGNORED}{token}){{{max_tokens}}}{_IGNORED}(?={token})")


def too_large(max_bytes: int) -> GraphQLError:
    return GraphQLError(
        f"The document is larger than {max_bytes} bytes",
        extensions={"code": "PAYLOAD_TOO_LARGE"},
    )


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_bytes: int
    max_tokens: int
    max_depth: int
    max_aliases: int
    _over: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_over", _over_limit(self.max_tokens))

    def exceeds_bytes(self, query: str) -> bool:
        if len(query) > self.max_bytes:
            return True
        # A character is at most four bytes: encode only when it could matter.
        return (
            len(query) * 4 > self.max_bytes
            and len(query.encode("utf-8", "surrogatepass")) > self.max_bytes
        )

    def refusal(self, query: str) -> GraphQLError | None:
        """Why `query` is refused without parsing it (too many bytes or
        tokens), or None."""
        if self.exceeds_bytes(query):
            return too_large(self.max_bytes)
        if len(query) <= self.max_tokens:  # a token is at least a character
            return None
        over = self._over.match(query)
        if over is None:
            return None
        error = GraphQLError(
            f"Syntax Error: Document contains more than {self.max_tokens} tokens. Parsing aborted."
        )
        # Where graphql-core's parser would stop, found in C (its own
        # get_location walks every line in Python).
        error.locations = [_location(query, over.end())]
        return error

    def parse(self, query: str) -> DocumentNode:
        """The document, or GraphQLError when it is too large, has too many
        tokens or does not parse."""
        refusal = self.refusal(query)
        if refusal is not None:
            raise refusal
        return parse(query, max_tokens=self.max_tokens)

    def problems(self, document: DocumentNode) -> list[GraphQLError]:
        """Depth and alias errors, as Strawberry's limiters word them."""
        fragments: dict[str, _Shape] = {}
        operations: list[tuple[OperationDefinitionNode, _Shape]] = []
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                fragments[definition.name.value] = _shape(definition.selection_set)
            elif isinstance(definition, OperationDefinitionNode):
                operations.append((definition, _shape(definition.selection_set)))
        measured = _measure_fragments(fragments)
        errors: list[GraphQLError] = []
        aliases = 0
        for operation, shape in operations:
            depth, count = shape.measure(measured)
            aliases += count
            if depth > self.max_depth:
                name = operation.name.value if operation.name else "anonymous"
                errors.append(
                    GraphQLError(
                        f"'{name}' exceeds maximum operation depth of {self.max_depth}",
                        operation,
                    )
                )
        if aliases > self.max_aliases:
            shown = str(aliases) if aliases <= _SHOWN_COUNT else f"More than {_SHOWN_COUNT}"
            errors.append(GraphQLError(f"{shown} aliases found. Allowed: {self.max_aliases}"))
        return errors


@dataclass(slots=True)
class _Shape:
    """What a selection set contributes, with its fragment spreads left open.

    `depth` is the deepest field without a selection (or an introspection
    field, which the depth limit ignores) as the number of fields around it;
    `aliases` counts aliased fields; `spreads` are (fields around the spread,
    or None where depth is not counted, fragment name).
    """

    depth: int = 0
    aliases: int = 0
    spreads: list[tuple[int | None, str]] = field(default_factory=list)

    def measure(self, fragments: dict[str, tuple[int, int]]) -> tuple[int, int]:
        """(depth, aliases) with each spread replaced by its fragment's."""
        depth, aliases = self.depth, self.aliases
        for level, name in self.spreads:
            measured = fragments.get(name)
            if measured is None:  # unknown, or a cycle: validation reports it
                continue
            aliases += measured[1]
            if level is not None:
                depth = max(depth, level + measured[0])
        return depth, aliases


def _shape(selection_set: SelectionSetNode) -> _Shape:
    shape = _Shape()
    stack: list[tuple[SelectionSetNode, int, bool]] = [(selection_set, 0, True)]
    while stack:
        selections, level, counted = stack.pop()
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    shape.aliases += 1
                inner = selection.selection_set
                introspection = selection.name.value.startswith("__")
                if inner is None or introspection:
                    if counted:
                        shape.depth = max(shape.depth, level)
                    if inner is not None:  # aliases inside still count
                        stack.append((inner, level + 1, False))
                else:
                    stack.append((inner, level + 1, counted))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, level, counted))
            elif isinstance(selection, FragmentSpreadNode):
                shape.spreads.append((level if counted else None, selection.name.value))
    return shape


def _measure_fragments(shapes: dict[str, _Shape]) -> dict[str, tuple[int, int]]:
    """(depth, aliases) of every fragment, each measured once, depth first
    on an explicit stack; a spread back into a fragment being measured (a
    cycle) counts nothing."""
    measured: dict[str, tuple[int, int]] = {}
    for root in shapes:
        if root in measured:
            continue
        active = {root}
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, index = stack[-1]
            spreads = shapes[name].spreads
            while index < len(spreads):
                target = spreads[index][1]
                if target in shapes and target not in measured and target not in active:
                    break
                index += 1
            if index < len(spreads):
                stack[-1] = (name, index + 1)
                target = spreads[index][1]
                active.add(target)
                stack.append((target, 0))
                continue
            stack.pop()
            active.discard(name)
            measured[name] = shapes[name].measure(measured)
    return measured
