"""The search query language, parsed into `backends.search_query` with a bounded cost.

    query     := item (" " item)*
    item      := "-" atom | atom ("OR" atom)* | modifier
    atom      := word | word"*" | '"' words '"'
    modifier  := from:USER | in:ROOM | has:thread | before:DATE | after:DATE

Words must all match; `OR` (upper case) binds the atoms on either side; a
word that splits into several tokens (`e-mail`) is a phrase. `before:DATE`
keeps messages before that day (UTC), `after:DATE` those after it; a DATE
is YYYY-MM-DD. A malformed query raises `SearchSyntaxError` with the
0-based position in the query where it went wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

from backends.search_query import AnyOf, Phrase, Term, TextMatch
from backends.search_text import spans

from .validation import user_id_problem

MAX_QUERY_LENGTH: Final = 1000
MAX_TERMS: Final = 32
"""Tokens in all words, phrases and OR options together."""
MAX_MODIFIERS: Final = 16
MIN_PREFIX: Final = 2
_FIRST_DAY: Final = date(1970, 1, 1)
_LAST_DAY: Final = date(9999, 12, 30)
_DATE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_ROOM: Final = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_MODIFIERS: Final = ("from", "in", "has", "before", "after")


class SearchSyntaxError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.position = position


@dataclass
class ParsedQuery:
    match: TextMatch
    user_ids: set[str] = field(default_factory=set)
    """from: modifiers (any of them)."""
    room_ids: set[str] = field(default_factory=set)
    """in: modifiers (any of them)."""
    has_thread: bool = False
    before: datetime | None = None
    """Exclusive upper bound from before:, the latest if several."""
    after: datetime | None = None
    """Inclusive lower bound from after:, the earliest if several."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    text: str
    start: int
    quoted: bool


def _chunks(query: str) -> list[_Chunk]:
    """Split on whitespace outside quotes; a quoted chunk keeps a leading '-'."""
    chunks: list[_Chunk] = []
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        start = i
        negated = query[i] == "-" and i + 1 < n and query[i + 1] == '"'
        if query[i] == '"' or negated:
            opening = i + (1 if negated else 0)
            close = query.find('"', opening + 1)
            if close < 0:
                raise SearchSyntaxError('unbalanced quote: add the closing "', opening)
            chunks.append(_Chunk(query[start : close + 1], start, quoted=True))
            i = close + 1
            continue
        while i < n and not query[i].isspace() and query[i] != '"':
            i += 1
        chunks.append(_Chunk(query[start:i], start, quoted=False))
    return chunks


class _Parser:
    def __init__(self) -> None:
        self.terms = 0
        self.modifiers = 0
        self.parsed = ParsedQuery(match=TextMatch(required=()))

    def count(self, n: int, position: int) -> None:
        self.terms += n
        if self.terms > MAX_TERMS:
            raise SearchSyntaxError(f"too many words: at most {MAX_TERMS}", position)

    def atom(self, chunk: _Chunk) -> Term | Phrase | None:
        """The atom, or None if it holds no token (punctuation only)."""
        text = chunk.text.removeprefix("-")
        offset = chunk.start + len(chunk.text) - len(text)
        if chunk.quoted:
            words = [token for _, _, token in spans(text[1:-1])]
            if not words:
                return None
            self.count(len(words), chunk.start)
            return Term(words[0]) if len(words) == 1 else Phrase(tuple(words))
        prefix = text.endswith("*")
        body = text.rstrip("*") if prefix else text
        if "*" in body:
            raise SearchSyntaxError("'*' may only end a word (prefix*)", offset + body.index("*"))
        found = [token for _, _, token in spans(body)]
        if prefix:
            if len(found) != 1 or len(found[0]) < MIN_PREFIX:
                raise SearchSyntaxError(
                    f"a prefix* needs one word of at least {MIN_PREFIX} letters before the '*'",
                    offset,
                )
            self.count(1, chunk.start)
            return Term(found[0], prefix=True)
        if not found:
            return None
        self.count(len(found), chunk.start)
        return Term(found[0]) if len(found) == 1 else Phrase(tuple(found))

    def modifier(self, chunk: _Chunk) -> bool:
        """Apply the chunk if it is a modifier; False if it is not one."""
        name, colon, value = chunk.text.partition(":")
        if not colon or name not in _MODIFIERS:
            return False
        self.modifiers += 1
        if self.modifiers > MAX_MODIFIERS:
            raise SearchSyntaxError(f"too many modifiers: at most {MAX_MODIFIERS}", chunk.start)
        where = chunk.start + len(name) + 1
        parsed = self.parsed
        if name == "from":
            problem = user_id_problem(value)
            if problem is not None:
                raise SearchSyntaxError(f"from: a user id {problem}", where)
            parsed.user_ids.add(value)
        elif name == "in":
            if not _ROOM.fullmatch(value):
                raise SearchSyntaxError(
                    "in: a room id is 1 to 64 letters, digits, '_' or '-'", where
                )
            parsed.room_ids.add(value)
        elif name == "has":
            if value != "thread":
                raise SearchSyntaxError("has: only has:thread is known", where)
            parsed.has_thread = True
        else:
            day = _day(value, where, name)
            if name == "before":
                bound = _midnight(day)
                if parsed.before is None or bound < parsed.before:
                    parsed.before = bound
            else:
                bound = _midnight(day + timedelta(days=1))
                if parsed.after is None or bound > parsed.after:
                    parsed.after = bound
        return True


def _day(value: str, where: int, name: str) -> date:
    match = _DATE.fullmatch(value)
    try:
        day = date(int(match[1]), int(match[2]), int(match[3])) if match else None
    except ValueError:
        day = None
    if day is None:
        raise SearchSyntaxError(f"{name}: a date is YYYY-MM-DD", where)
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise SearchSyntaxError(f"{name}: the date must lie between 1970 and 9999", where)
    return day


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def parse_query(query: str) -> ParsedQuery:
    """Parse what a client typed; SearchSyntaxError if it is malformed."""
    if len(query) > MAX_QUERY_LENGTH:
        raise SearchSyntaxError(
            f"the query is longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH
        )
    parser = _Parser()
    required: list[Term | Phrase | AnyOf] = []
    excluded: list[Term | Phrase] = []
    chunks = _chunks(query)
    i = 0
    while i < len(chunks):
        chunk = chunks[i]
        if not chunk.quoted and chunk.text == "OR":
            raise SearchSyntaxError("OR needs a word on each side", chunk.start)
        if not chunk.quoted and parser.modifier(chunk):
            i += 1
            continue
        if chunk.text.startswith("-") and len(chunk.text) > 1:
            atom = parser.atom(chunk)
            if atom is not None:
                excluded.append(atom)
            i += 1
            continue
        options: list[Term | Phrase] = []
        atom = parser.atom(chunk)
        if atom is not None:
            options.append(atom)
        i += 1
        while i < len(chunks) and not chunks[i].quoted and chunks[i].text == "OR":
            if i + 1 >= len(chunks):
                raise SearchSyntaxError("OR needs a word on each side", chunks[i].start)
            following = chunks[i + 1]
            if following.text.startswith("-") or (
                not following.quoted and following.text.partition(":")[0] in _MODIFIERS
            ):
                raise SearchSyntaxError("OR joins words and phrases only", following.start)
            atom = parser.atom(following)
            if atom is not None:
                options.append(atom)
            i += 2
        unique = list(dict.fromkeys(options))
        if len(unique) == 1:
            required.append(unique[0])
        elif unique:
            required.append(AnyOf(tuple(unique)))
    if not required:
        raise SearchSyntaxError(
            "nothing to search for: give a word or a phrase (modifiers and -exclusions "
            "only narrow a search)",
            0,
        )
    parser.parsed.match = TextMatch(required=tuple(required), excluded=tuple(excluded))
    return parser.parsed
