"""What a batch asks for, checked before anything runs: the store's configuration (TTL and
index) and each op, turned into what the database needs (a bad op fails the whole batch with
InvalidStoreItem, before anything is written)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    GetOp,
    IndexConfig,
    ListNamespacesOp,
    Op,
    PutOp,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from flatstate.errors import InvalidStoreItem
from flatstate.integrations.langgraph._filters import CompiledFilter, compile_filter
from flatstate.integrations.langgraph._items import (
    check_key,
    check_value,
    encode_json,
    encode_namespace,
    keyword_text,
)

__all__ = ["Fields", "Plan", "Put", "check_index", "check_ttl_config", "plan_batch"]

Fields = list[tuple[str, Any]]
"""The JSON paths to index: (the path as given, the path tokenized, or "$" for all)."""

_TTL_KEYS = frozenset({"default_ttl", "refresh_on_read", "sweep_interval_minutes", "omit_expired"})


class Put(NamedTuple):
    """A checked put: everything its write needs but the embeddings."""

    namespace: bytes
    key: str
    value: str | None  # JSON; None deletes
    ttl: float | None
    keyword: str | None  # the keyword index's text; None: not indexed
    fields: list[tuple[str, str]]  # (field name, text) to embed


class Plan(NamedTuple):
    ops: list[Op]
    filters: dict[int, CompiledFilter]
    puts: list[Put]
    queries: list[str]  # the semantic queries to embed


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# Expiry times are milliseconds in a 64-bit column: ten billion minutes (some 19,000 years)
# from now still fit. Pages past the same bound are the whole result (or nothing) anyway.
MAX_MINUTES = 10**10
MAX_PAGE = 2**62


def check_ttl(ttl: Any, what: str) -> float | None:
    if ttl is None:
        return None
    if not _number(ttl) or not 0 < ttl <= MAX_MINUTES:
        raise InvalidStoreItem(
            f"{what} is {ttl!r}: a TTL is a positive number of minutes up to {MAX_MINUTES:,}, "
            "or None"
        )
    return float(ttl)


def check_page(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidStoreItem(f"{what} is {value!r}: it must be an integer >= 0")
    return value


def sql_page(value: int) -> int:
    """``value`` as a 64-bit SQL integer: a page past MAX_PAGE is the same page."""
    return min(value, MAX_PAGE)


def check_ttl_config(ttl: TTLConfig | None) -> TTLConfig | None:
    if ttl is None:
        return None
    if not isinstance(ttl, dict):
        raise InvalidStoreItem(f"ttl is a TTLConfig dict, not {type(ttl).__name__}")
    unknown = set(ttl) - _TTL_KEYS
    if unknown:
        raise InvalidStoreItem(
            f"ttl has unknown keys {sorted(unknown)}; TTLConfig has "
            "default_ttl, refresh_on_read and sweep_interval_minutes"
        )
    check_ttl(ttl.get("default_ttl"), "ttl['default_ttl']")
    interval = ttl.get("sweep_interval_minutes")
    if interval is not None and (not _number(interval) or not 0 < interval <= MAX_MINUTES):
        raise InvalidStoreItem(
            f"ttl['sweep_interval_minutes'] is {interval!r}: a positive number up to "
            f"{MAX_MINUTES:,}, or None"
        )
    if not isinstance(ttl.get("refresh_on_read", True), bool):
        raise InvalidStoreItem("ttl['refresh_on_read'] is True or False")
    return TTLConfig(**ttl)


def check_index(
    index: IndexConfig | None,
) -> tuple[IndexConfig | None, Embeddings | None, Fields]:
    if index is None:
        return None, None, []
    if not isinstance(index, dict):
        raise InvalidStoreItem(f"index is an IndexConfig dict, not {type(index).__name__}")
    dims = index.get("dims")
    if not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0:
        raise InvalidStoreItem(f"index['dims'] is {dims!r}: the embeddings' length, an int")
    if index.get("embed") is None:
        raise InvalidStoreItem("index needs 'embed': an embedding function or Embeddings")
    fields = index.get("fields") or ["$"]
    if not isinstance(fields, list | tuple) or not all(isinstance(f, str) for f in fields):
        raise InvalidStoreItem("index['fields'] is a list of JSON paths, e.g. ['text']")
    config = IndexConfig(dims=dims, embed=index["embed"], fields=list(fields))
    tokenized = [(f, f if f == "$" else tokenize_path(f)) for f in fields]
    return config, ensure_embeddings(index["embed"]), tokenized


def plan_batch(ops: Iterable[Op], fields: Fields, embedding: bool) -> Plan:
    """Check every op before anything runs; a bad one fails the batch, nothing written."""
    listed = list(ops)
    filters: dict[int, CompiledFilter] = {}
    puts: dict[tuple[bytes, str], Put] = {}
    queries: list[str] = []
    for i, op in enumerate(listed):
        if not isinstance(op, GetOp | SearchOp | ListNamespacesOp | PutOp):
            raise InvalidStoreItem(
                f"op {i} is a {type(op).__name__}; a batch takes GetOp, PutOp, SearchOp "
                "and ListNamespacesOp"
            )
        validate_op_namespace(op)
        if isinstance(op, GetOp):
            encode_namespace(op.namespace)
            check_key(op.key)
        elif isinstance(op, SearchOp):
            encode_namespace(op.namespace_prefix)
            check_page(op.limit, "limit")
            check_page(op.offset, "offset")
            if op.query is not None and not isinstance(op.query, str):
                raise InvalidStoreItem(f"query is text, not {type(op.query).__name__}")
            filters[i] = compile_filter(op.filter)
            if op.query and embedding and op.query not in queries:
                queries.append(op.query)
        elif isinstance(op, ListNamespacesOp):
            _check_listing(op)
        else:
            put = _check_put(op, fields, embedding)
            # The last put of a key wins, as in LangGraph's own stores.
            puts.pop((put.namespace, put.key), None)
            puts[put.namespace, put.key] = put
    return Plan(listed, filters, list(puts.values()), queries)


def _check_listing(op: ListNamespacesOp) -> None:
    check_page(op.limit, "limit")
    check_page(op.offset, "offset")
    if op.max_depth is not None and (
        not isinstance(op.max_depth, int) or isinstance(op.max_depth, bool) or op.max_depth < 1
    ):
        raise InvalidStoreItem(f"max_depth is {op.max_depth!r}: an integer >= 1, or None")
    for condition in op.match_conditions or ():
        if condition.match_type not in ("prefix", "suffix"):
            raise InvalidStoreItem(f"match_type is {condition.match_type!r}: 'prefix' or 'suffix'")


def _check_put(op: PutOp, default_paths: Fields, embedding: bool) -> Put:
    if not op.namespace:
        raise InvalidStoreItem("a put needs a namespace of at least one label")
    namespace = encode_namespace(op.namespace)
    key = check_key(op.key)
    if op.value is None:
        return Put(namespace, key, None, None, None, [])
    if not isinstance(op.value, dict) and not hasattr(op.value, "items"):
        raise InvalidStoreItem(f"a value is a dict, not {type(op.value).__name__}")
    value = dict(op.value)
    check_value(value)
    ttl = check_ttl(op.ttl, "ttl")
    index = op.index
    if (
        index is not None
        and index is not False
        and not (isinstance(index, list | tuple) and all(isinstance(f, str) for f in index))
    ):
        raise InvalidStoreItem("index is False, None, or a list of JSON paths")
    if index is False:
        return Put(namespace, key, encode_json(value).decode(), ttl, None, [])
    paths = [(f, f if f == "$" else tokenize_path(f)) for f in index] if index else default_paths
    keyword = _keyword(value, paths)
    fields: list[tuple[str, str]] = []
    if embedding:
        for name, path in paths:
            texts = get_text_at_path(value, path)
            if len(texts) == 1:
                fields.append((name, texts[0]))
            else:
                fields.extend((f"{name}.{i}", text) for i, text in enumerate(texts))
    return Put(namespace, key, encode_json(value).decode(), ttl, keyword, fields)


def _keyword(value: dict[str, Any], paths: Fields) -> str:
    if not paths or any(name == "$" for name, _ in paths):
        return keyword_text(value)
    return "\n".join(text for _, path in paths for text in get_text_at_path(value, path))
