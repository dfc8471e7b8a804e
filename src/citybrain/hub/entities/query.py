"""The NGSI-LD `q` filter language, parsed once and executed two ways: as SQL (SQLite or PostgreSQL) for
entity queries, and in Python for subscription matching. The property tests hold the two to one meaning.

Grammar (a subset of ETSI GS CIM 009 §4.9):
    q          := or
    or         := and ( "|" and )*
    and        := term ( ";" term )*
    term       := "(" or ")" | "!" path | path [ op literal ]
    path       := attr ( "[" key "]" )*          attr's value (a Relationship's object); [key] goes into it
    op         := "==" | "!=" | ">=" | "<=" | ">" | "<"
    literal    := number | "string" | true | false | number ".." number  (only with ==, !=)
                | literal ( "," literal )+                                 (any of; only with ==, !=)

Semantics: a comparison is true only where the value at `path` exists and has the literal's type
(numbers with numbers, strings with strings, booleans with booleans); strings order by code point.
`a!=x` is true where `a` exists and does not equal x. A bare `path` is true where it exists; `!path`
where it does not.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from citybrain.core.errors import InvalidInput
from citybrain.hub.entities.types import ATTR_NAME_RE

Scalar = int | float | str | bool
Op = Literal["==", "!=", ">=", "<=", ">", "<"]
MAX_Q_LENGTH = 2000
MAX_Q_NESTING = 12  # parentheses; deeper SQL overflows SQLite's parser stack (and nobody writes it)
MAX_Q_INT = 2**63  # int literals beyond int64 cannot be bound on either backend
NOT_IN_Q = {"location": "filter places with bbox= or near=…&maxDistance=",
            "orgUnit": "filter org units with orgUnit= (it includes descendants)"}


@dataclass(frozen=True, slots=True)
class Range:
    low: int | float
    high: int | float


@dataclass(frozen=True, slots=True)
class Compare:
    path: tuple[str, ...]
    op: Op
    value: Scalar | Range | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    path: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Node, ...]


Node = Compare | Exists | And | Or

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<op>==|!=|>=|<=|>|<)
    | (?P<range>\.\.)
    | (?P<punct>[;|(),\[\]!])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _error(text, pos, "unexpected character")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


def _error(text: str, pos: int, reason: str) -> InvalidInput:
    return InvalidInput.at("q", f"{reason} at position {pos}: {text[:pos]}⟨here⟩{text[pos:]}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.nesting = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise _error(self.text, len(self.text), f"expected {value or kind or 'more'}, found the end")
        if (kind and token[0] != kind) or (value and token[1] != value):
            raise _error(self.text, token[2], f"expected {value or kind}, found {token[1]!r}")
        self.i += 1
        return token

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value and token[0] in ("punct", "op", "range")

    def parse(self) -> Node:
        node = self.parse_or()
        token = self.peek()
        if token is not None:
            raise _error(self.text, token[2], f"unexpected {token[1]!r}")
        return node

    def parse_or(self) -> Node:
        terms = [self.parse_and()]
        while self.at("|"):
            self.take()
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def parse_and(self) -> Node:
        terms = [self.parse_term()]
        while self.at(";"):
            self.take()
            terms.append(self.parse_term())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def parse_term(self) -> Node:
        if self.at("("):
            opening = self.take()
            self.nesting += 1
            if self.nesting > MAX_Q_NESTING:
                raise _error(self.text, opening[2], f"parentheses nest at most {MAX_Q_NESTING} deep")
            node = self.parse_or()
            self.take("punct", ")")
            self.nesting -= 1
            return node
        if self.at("!"):
            self.take()
            return Exists(self.parse_path(), negated=True)
        path = self.parse_path()
        token = self.peek()
        if token is None or token[0] != "op":
            return Exists(path)
        op = self.take()[1]
        value = self.parse_value(op, token[2])
        return Compare(path, op, value)  # type: ignore[arg-type]

    def parse_path(self) -> tuple[str, ...]:
        parts = [self.take("word")[1]]
        while self.at("["):
            self.take()
            parts.append(self.take("word")[1])
            self.take("punct", "]")
        if not ATTR_NAME_RE.match(parts[0]):
            raise InvalidInput.at("q", f"invalid attribute name {parts[0]!r}")
        if parts[0] in NOT_IN_Q:
            raise InvalidInput.at("q", f"{parts[0]} is not an attribute q can test: {NOT_IN_Q[parts[0]]}")
        return tuple(parts)

    def parse_literal(self) -> Scalar:
        token = self.peek()
        if token is None:
            raise _error(self.text, len(self.text), "expected a value, found the end")
        kind, text, pos = token
        self.i += 1
        if kind == "number":
            if any(c in text for c in ".eE"):
                number = float(text)
                if not math.isfinite(number):
                    raise _error(self.text, pos, "numbers must be finite")
                return number
            integer = int(text)
            if not -MAX_Q_INT < integer < MAX_Q_INT:
                raise _error(self.text, pos, "whole numbers must lie within ±2^63; write larger ones as 1.8e19")
            return integer
        if kind == "string":
            try:
                value = json.loads(text)
                value.encode("utf-8")
            except (ValueError, UnicodeEncodeError):
                raise _error(self.text, pos, "invalid string literal (not JSON string syntax, or a lone "
                                             "surrogate)") from None
            if "\x00" in value:
                raise _error(self.text, pos, "text cannot contain NUL (U+0000); no stored text does")
            return value
        if kind == "word" and text in ("true", "false"):
            return text == "true"
        raise _error(self.text, pos, f"expected a number, \"string\", true or false, found {text!r}")

    def parse_value(self, op: str, pos: int) -> Scalar | Range | tuple[Scalar, ...]:
        first = self.parse_literal()
        if self.at(".."):
            self.take()
            second = self.parse_literal()
            if op not in ("==", "!=") or not all(_is_number(v) for v in (first, second)):
                raise _error(self.text, pos, "a range low..high takes numbers and goes with == or !=")
            return Range(first, second)  # type: ignore[arg-type]
        if self.at(","):
            values = [first]
            while self.at(","):
                self.take()
                values.append(self.parse_literal())
            if op not in ("==", "!="):
                raise _error(self.text, pos, "a list of values goes with == or !=")
            return tuple(values)
        if op not in ("==", "!=") and isinstance(first, bool):
            raise _error(self.text, pos, "booleans compare only with == or !=")
        return first


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _inexact_as_double(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and float(value) != value


def parse_q(text: str) -> Node:
    """Parse a q expression; raises InvalidInput (field `q`) pointing at the problem."""
    if len(text) > MAX_Q_LENGTH:
        raise InvalidInput.at("q", f"longer than {MAX_Q_LENGTH} characters")
    if not text.strip():
        raise InvalidInput.at("q", "empty expression")
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------- Python


_MISSING = object()


def _resolve(attrs: dict[str, Any], path: tuple[str, ...]) -> Any:
    attr = attrs.get(path[0])
    if not isinstance(attr, dict):
        return _MISSING
    if "value" in attr:
        value = attr["value"]
    elif "object" in attr:
        value = attr["object"]
    elif "languageMap" in attr:
        value = attr["languageMap"]
    else:
        return _MISSING
    for key in path[1:]:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _same_kind(value: Any, literal: Scalar) -> bool:
    if isinstance(literal, bool):
        return isinstance(value, bool)
    if _is_number(literal):
        return _is_number(value)
    return isinstance(value, str)


def _equals(value: Any, literal: Scalar | Range | tuple[Scalar, ...]) -> bool:
    if isinstance(literal, Range):
        return _is_number(value) and literal.low <= value <= literal.high
    if isinstance(literal, tuple):
        return any(_same_kind(value, item) and value == item for item in literal)
    return _same_kind(value, literal) and value == literal


def evaluate(node: Node, attrs: dict[str, Any]) -> bool:
    """Whether an entity's attribute map satisfies the expression."""
    match node:
        case And(terms):
            return all(evaluate(t, attrs) for t in terms)
        case Or(terms):
            return any(evaluate(t, attrs) for t in terms)
        case Exists(path, negated):
            return (_resolve(attrs, path) is _MISSING) == negated
        case Compare(path, op, literal):
            value = _resolve(attrs, path)
            if value is _MISSING or isinstance(value, dict | list):
                return False
            if op == "==":
                return _equals(value, literal)
            if op == "!=":
                return not _equals(value, literal)
            if not _same_kind(value, literal):  # type: ignore[arg-type]
                return False
            match op:
                case ">":
                    return value > literal  # type: ignore[operator]
                case ">=":
                    return value >= literal  # type: ignore[operator]
                case "<":
                    return value < literal  # type: ignore[operator]
                case _:
                    return value <= literal  # type: ignore[operator]
    raise TypeError(f"not a q node: {node!r}")


# ------------------------------------------------------------------------------------------------- SQL


class SqlCompiler:
    """Compiles q nodes against a JSON column of normalized attributes, per dialect."""

    def __init__(self, column: ColumnElement[Any], dialect: str) -> None:
        self.column = column
        self.dialect = dialect

    # A value lives under "value" for Properties, "object" for Relationships and "languageMap" for
    # LanguageProperties (an attribute has exactly one of them); paths continue below that.
    def _paths(self, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [(path[0], holder, *path[1:]) for holder in ("value", "object", "languageMap")]

    def _json_type(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return sa.func.json_type(self.column, _sqlite_path(path))
        return sa.func.jsonb_typeof(sa.func.jsonb_extract_path(self.column, *path))

    def _text(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return sa.func.json_extract(self.column, _sqlite_path(path))
        return sa.func.jsonb_extract_path_text(self.column, *path)

    def _typed(self, path: tuple[str, ...], literal: Scalar) -> ColumnElement[Any]:
        """The value at `path` when it has the literal's kind, else NULL."""
        kinds: tuple[str, ...]
        if isinstance(literal, bool):
            kinds = ("true", "false") if self.dialect == "sqlite" else ("boolean",)
        elif _is_number(literal):
            kinds = ("integer", "real") if self.dialect == "sqlite" else ("number",)
        else:
            kinds = ("text",) if self.dialect == "sqlite" else ("string",)
        raw = self._text(path)
        if self.dialect != "sqlite":
            if isinstance(literal, bool):
                raw = sa.cast(raw, sa.Boolean)
            elif _is_number(literal):
                # Every stored number is an exact double (see ngsi._storable), so double precision compares
                # exactly, except against an int literal that is no double (2^53 + 1): there, numeric.
                raw = sa.cast(raw, sa.Numeric if _inexact_as_double(literal) else sa.Float)
            else:
                raw = sa.collate(raw, "C")  # code-point order, as in Python and SQLite
        return sa.case((self._json_type(path).in_(kinds), raw), else_=sa.null())

    def _value(self, path: tuple[str, ...], literal: Scalar) -> ColumnElement[Any]:
        return sa.func.coalesce(*(self._typed(p, literal) for p in self._paths(path)))

    def _exists(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return sa.or_(*(self._json_type(p).is_not(None) for p in self._paths(path)))

    def _scalar_exists(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        kinds = ("object", "array")  # the same names in SQLite's json_type and PostgreSQL's jsonb_typeof
        return sa.or_(*(sa.and_(self._json_type(p).is_not(None), self._json_type(p).not_in(kinds))
                        for p in self._paths(path)))

    def _bind(self, literal: Scalar) -> Any:
        if isinstance(literal, bool) and self.dialect == "sqlite":
            return int(literal)  # json_extract returns 1/0 for true/false
        return literal

    def _equals(self, path: tuple[str, ...], literal: Scalar | Range | tuple[Scalar, ...]) -> ColumnElement[bool]:
        if isinstance(literal, Range):
            value = self._value(path, literal.high if _inexact_as_double(literal.high) else literal.low)
            return sa.and_(value.is_not(None), value >= literal.low, value <= literal.high)
        if isinstance(literal, tuple):
            return sa.or_(*(self._equals(path, item) for item in literal))
        value = self._value(path, literal)
        return sa.and_(value.is_not(None), value == self._bind(literal))

    def compile(self, node: Node) -> ColumnElement[bool]:
        match node:
            case And(terms):
                return sa.and_(*(self.compile(t) for t in terms))
            case Or(terms):
                return sa.or_(*(self.compile(t) for t in terms))
            case Exists(path, negated):
                exists = self._exists(path)
                return sa.not_(exists) if negated else exists
            case Compare(path, op, literal):
                if op == "==":
                    return self._equals(path, literal)
                if op == "!=":
                    return sa.and_(self._scalar_exists(path), sa.not_(self._equals(path, literal)))
                value = self._value(path, literal)  # type: ignore[arg-type]
                bound = self._bind(literal)  # type: ignore[arg-type]
                comparison = {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]
                return sa.and_(value.is_not(None), comparison)
        raise TypeError(f"not a q node: {node!r}")


def _sqlite_path(path: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{part}"' for part in path)
