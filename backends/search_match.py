"""The meaning of a `TextMatch` over tokens, as reference code.

The memory backend searches with it; every backend's hits get their
highlights from `matched_ranges`, so the ranges never depend on the backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .search_query import AnyOf, Phrase, Term, TextMatch
from .search_text import spans

__all__ = ["matched_ranges", "matches", "score"]


def _starts(clause: Term | Phrase, tokens: Sequence[str]) -> list[int]:
    """Indexes of `tokens` where the clause matches."""
    if isinstance(clause, Term):
        if clause.prefix:
            return [i for i, t in enumerate(tokens) if t.startswith(clause.token)]
        return [i for i, t in enumerate(tokens) if t == clause.token]
    words = clause.tokens
    n = len(words)
    return [
        i
        for i in range(len(tokens) - n + 1)
        if tokens[i] == words[0] and tuple(tokens[i : i + n]) == words
    ]


def _found(clause: Term | Phrase | AnyOf, tokens: Sequence[str]) -> bool:
    if isinstance(clause, AnyOf):
        return any(_starts(option, tokens) for option in clause.options)
    return bool(_starts(clause, tokens))


def matches(match: TextMatch, tokens: Sequence[str]) -> bool:
    """Whether a message with these (folded) tokens matches."""
    return all(_found(c, tokens) for c in match.required) and not any(
        _found(c, tokens) for c in match.excluded
    )


def score(match: TextMatch, tokens: Sequence[str]) -> float:
    """Matches of the positive terms, damped by the message's length."""
    hits = sum(len(_starts(term, tokens)) for term in match.positive_terms())
    return hits / math.sqrt(max(len(tokens), 1))


def matched_ranges(match: TextMatch, text: str) -> list[tuple[int, int]]:
    """[start, end) character ranges of `text` that the positive terms match,
    in order, overlapping ranges merged."""
    found = list(spans(text))
    tokens = [token for _, _, token in found]
    ranges: list[tuple[int, int]] = []
    for term in match.positive_terms():
        width = 1 if isinstance(term, Term) else len(term.tokens)
        for i in _starts(term, tokens):
            ranges.append((found[i][0], found[i + width - 1][1]))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
