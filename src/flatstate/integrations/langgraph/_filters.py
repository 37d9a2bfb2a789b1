"""Metadata filters of ``BaseStore.search``: checked, turned into SQL where SQL is exact,
and matched in Python for the rest.

A filter maps top-level fields of an item's value to a condition:

- a plain value: the field equals it. Equality is JSON's: numbers by value (``1`` equals
  ``1.0``), booleans only to booleans, strings and null to themselves; ``None`` also
  matches a missing field. A list matches a list of the same length element by element;
  a dict without ``$`` operators matches a dict holding at least those fields.
- a dict of operators, all of which must hold: ``$eq`` and ``$ne`` (deep equality, as
  above), ``$gt``, ``$gte``, ``$lt``, ``$lte`` (a number against numbers, a string against
  strings in code-point order; a field of any other type does not match).

These are InMemoryStore's rules where its own are defined by JSON types. Where it coerces,
these do not: it counts ``True`` equal to ``1``, compares a number with ``True`` or with
a string that parses as one (``"10" > 5``) and strings with strings as numbers when both
parse (``"10" > "5"``), and raises when a comparison meets a missing field or a string that
does not parse. On SQLite, top-level clauses on plain scalars and comparisons become SQL
over ``json_type`` and ``json_extract`` (exact for those cases, except an integer beyond 64
bits, which ``json_extract`` gives as a double: such a row passes SQL and the clause is
matched here too); whatever else a filter says is matched here, row by row, in the same
order. On PostgreSQL the whole filter is matched here, after SQL has chosen the namespace
range: one set of rules, no second translation to keep exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from flatstate.errors import InvalidStoreItem

__all__ = ["CompiledFilter", "compile_filter", "matches"]

COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = ("$eq", "$ne", *COMPARISONS)
# Fields SQL reaches as $."field": no quote, backslash or control character to escape.
_PLAIN_FIELD = re.compile(r'[^"\\\x00-\x1f]+')
_INT64 = range(-(2**63), 2**63)

Predicate = Callable[[Mapping[str, Any]], bool]


def equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans apart from numbers, containers deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(equal, a, b))
    if isinstance(a, str) and isinstance(b, str):
        return str.__eq__(a, b)
    return a is None and b is None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(value: Any, operator: str, operand: Any) -> bool:
    if _is_number(operand):
        if not _is_number(value):
            return False
    elif not isinstance(value, str):
        return False
    if operator == "$gt":
        return bool(value > operand)
    if operator == "$gte":
        return bool(value >= operand)
    if operator == "$lt":
        return bool(value < operand)
    return bool(value <= operand)


def _is_operators(condition: Any) -> bool:
    return isinstance(condition, dict) and any(
        isinstance(k, str) and k.startswith("$") for k in condition
    )


def matches(value: Any, condition: Any) -> bool:
    """Whether ``value`` (a field of an item, None if missing) meets ``condition``."""
    if _is_operators(condition):
        for operator, operand in condition.items():
            if operator == "$eq":
                if not equal(value, operand):
                    return False
            elif operator == "$ne":
                if equal(value, operand):
                    return False
            elif not _compare(value, operator, operand):
                return False
        return True
    if isinstance(condition, dict):
        return isinstance(value, dict) and all(
            matches(value.get(k), v) for k, v in condition.items()
        )
    if isinstance(condition, list | tuple):
        return (
            isinstance(value, list)
            and len(value) == len(condition)
            and all(map(matches, value, condition))
        )
    return equal(value, condition)


def check(condition: Any, where: str) -> None:
    """Raise InvalidStoreItem for an unknown operator or a comparison that cannot hold."""
    if _is_operators(condition):
        for operator, operand in condition.items():
            if operator not in OPERATORS:
                raise InvalidStoreItem(
                    f"filter {where}: unknown operator {operator!r}; "
                    f"use one of {', '.join(OPERATORS)}, or a plain value for equality"
                )
            if operator in COMPARISONS and not (_is_number(operand) or isinstance(operand, str)):
                raise InvalidStoreItem(
                    f"filter {where}: {operator} compares with a number or a string, "
                    f"not {type(operand).__name__}"
                )
            if operator in ("$eq", "$ne"):
                _check_plain(operand, where)
    elif isinstance(condition, dict):
        for key, sub in condition.items():
            if not isinstance(key, str):
                raise InvalidStoreItem(f"filter {where}: field names are strings, not {key!r}")
            check(sub, f"{where}.{key}")
    elif isinstance(condition, list | tuple):
        for i, sub in enumerate(condition):
            check(sub, f"{where}[{i}]")
    else:
        _check_plain(condition, where)


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | int | float | list | tuple | dict):
        return
    raise InvalidStoreItem(
        f"filter {where}: {type(value).__name__} is not a JSON value; "
        "compare with a string, number, boolean, None, list or dict"
    )


class CompiledFilter:
    """A filter as SQLite conditions (with their arguments) and what remains for Python;
    ``whole`` is the filter itself, for a database that matches all of it in Python."""

    __slots__ = ("args", "residual", "sql", "whole")

    def __init__(
        self,
        sql: list[str],
        args: list[Any],
        residual: dict[str, Any],
        whole: dict[str, Any] | None = None,
    ) -> None:
        self.sql = sql
        self.args = args
        self.residual = residual
        self.whole = whole or {}

    def predicate(self, *, whole: bool = False) -> Predicate | None:
        """The Python half (the whole filter with ``whole``): None when nothing is left."""
        clauses = list((self.whole if whole else self.residual).items())
        if not clauses:
            return None
        return lambda value: all(matches(value.get(f), c) for f, c in clauses)


def _sql_scalar(operand: Any) -> bool:
    if isinstance(operand, bool) or operand is None or isinstance(operand, str):
        return True
    if isinstance(operand, int):
        return operand in _INT64
    return isinstance(operand, float)


def _sql_equal(path: str, operand: Any, args: list[Any]) -> str:
    """SQL true exactly when the field at ``path`` equals the scalar ``operand``."""
    if operand is None:
        args.append(path)
        return "coalesce(json_type(value, ?), 'null') = 'null'"
    if isinstance(operand, bool):
        args += [path, "true" if operand else "false"]
        return "json_type(value, ?) IS ?"
    if isinstance(operand, str):
        args += [path, path, operand]
        return "(json_type(value, ?) = 'text' AND json_extract(value, ?) = ?)"
    args += [path, path, operand]
    return "(json_type(value, ?) IN ('integer', 'real') AND json_extract(value, ?) = ?)"


def _sql_clause(path: str, condition: Any, args: list[Any]) -> tuple[str, bool] | None:
    """The SQL for one top-level clause and whether it is exact (else Python matches the
    clause again), or None when only Python can match it."""
    operands = list(condition.values()) if _is_operators(condition) else [condition]
    if not all(_sql_scalar(operand) for operand in operands):
        return None
    own: list[Any] = []
    sql = _sql_conditions(path, condition, own)
    if not any(map(_is_number, operands)):
        args += own
        return sql, True
    # An integer beyond int64 comes out of json_extract as a double, and compares inexactly:
    # such a row passes here and is decided in Python.
    args += [path, path, *own]
    lossy = "(json_type(value, ?) = 'integer' AND typeof(json_extract(value, ?)) = 'real')"
    return f"({lossy} OR {sql})", False


def _sql_conditions(path: str, condition: Any, args: list[Any]) -> str:
    if not _is_operators(condition):
        return _sql_equal(path, condition, args)
    parts: list[str] = []
    for operator, operand in condition.items():
        if operator == "$eq":
            parts.append(_sql_equal(path, operand, args))
        elif operator == "$ne":
            parts.append(f"NOT coalesce({_sql_equal(path, operand, args)}, 0)")
        else:
            kind = "= 'text'" if isinstance(operand, str) else "IN ('integer', 'real')"
            args += [path, path, operand]
            parts.append(
                f"(json_type(value, ?) {kind} AND json_extract(value, ?) {COMPARISONS[operator]} ?)"
            )
    return " AND ".join(parts)


def compile_filter(spec: Any) -> CompiledFilter:
    """Check ``spec`` (a SearchOp's filter) and split it into SQL and a Python residual.

    Raises InvalidStoreItem for a filter that is not a dict of fields, an unknown
    operator, or a comparison with something other than a number or a string.
    """
    if spec is None:
        return CompiledFilter([], [], {})
    if not isinstance(spec, Mapping):
        raise InvalidStoreItem(
            f"a filter is a dict of fields, not {type(spec).__name__}: e.g. {{'kind': 'note'}}"
        )
    sql: list[str] = []
    args: list[Any] = []
    residual: dict[str, Any] = {}
    for field, condition in spec.items():
        if not isinstance(field, str):
            raise InvalidStoreItem(f"filter field names are strings, not {field!r}")
        check(condition, field)
        clause_args: list[Any] = []
        clause = (
            _sql_clause(f'$."{field}"', condition, clause_args)
            if _PLAIN_FIELD.fullmatch(field)
            else None
        )
        if clause is None or not clause[1]:
            residual[field] = condition
        if clause is not None:
            sql.append(clause[0])
            args += clause_args
    return CompiledFilter(sql, args, residual, dict(spec))
