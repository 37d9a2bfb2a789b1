"""``FlatstateSaver``: a LangGraph checkpointer on flatstate's storage.

One object serves the sync methods (from any thread) and the async ones (from any event
loop); both kinds of write go through the same writer thread and share its group
commits. Channel values are stored by content (:mod:`._pieces`), so a large state that
changes a little per step costs disk in proportion to the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import msgspec

from flatstate.errors import ExtraMissing

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # the extra is missing: say which one
    raise ExtraMissing("flatstate.integrations.langgraph", "langgraph") from exc

from flatstate.integrations.langgraph._cache import DEFAULT_CACHE_BYTES, Entry
from flatstate.integrations.langgraph._engine import MISS, Engine
from flatstate.integrations.langgraph._flat import copier
from flatstate.integrations.langgraph._pieces import (
    INLINE,
    LISTED,
    PIECES_TYPE,
    WHOLE,
    RecentEncodings,
    assemble,
    decode_value,
    listing,
    manifest_digests,
    pack_manifest,
    unpack_manifest,
)
from flatstate.integrations.langgraph._tables import Row, WriteRow

__all__ = ["STRATEGIES", "FlatstateSaver"]

STRATEGIES = ("keep_latest", "delete")

_pack = msgspec.msgpack.Encoder().encode
_unpack_refs = msgspec.msgpack.Decoder(dict[str, tuple[str, list[Any]]]).decode


def open_engine(location: str, **options: Any) -> Engine:
    """The engine for ``location``: a ``postgresql://`` URL, or a state directory."""
    if not isinstance(location, str) or not location:
        raise ValueError(
            f"location must be a state directory or a postgresql:// URL, not {location!r}"
        )
    cache_bytes = options.pop("cache_bytes", DEFAULT_CACHE_BYTES)
    if location.startswith(("postgresql://", "postgres://")):
        if "synchronous" in options:
            raise ValueError(
                "synchronous is a SQLite option; on PostgreSQL the server's "
                "synchronous_commit decides"
            )
        from flatstate.integrations.langgraph._postgres_engine import PostgresEngine

        return PostgresEngine(location, cache_bytes=cache_bytes, **options)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise ValueError(
            f"no checkpointer for {scheme}:// locations: give a state directory or a "
            "postgresql:// URL"
        )
    options.pop("connect_timeout", None)
    options.pop("pool_size", None)
    from flatstate.integrations.langgraph._sqlite_engine import SqliteEngine

    return SqliteEngine(location, cache_bytes=cache_bytes, **options)


class FlatstateSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer in a flatstate state directory or on PostgreSQL.

    ``location``: a directory (its own SQLite file, ``langgraph.sqlite``, is made there)
    or a ``postgresql://`` URL. Options: ``serde`` (LangGraph's serializer),
    ``synchronous`` ("normal": an acknowledged write survives a crash of the process;
    "full": of the machine too; SQLite only), ``lock_timeout``, ``cache_bytes`` (what the
    saver keeps in memory), and on PostgreSQL ``connect_timeout`` and ``pool_size``.
    """

    def __init__(
        self, location: str, *, serde: SerializerProtocol | None = None, **options: Any
    ) -> None:
        super().__init__(serde=serde)
        self._engine = open_engine(location, **options)
        self.location = self._engine.location
        self._encodings = RecentEncodings()

    # -- opening and closing --------------------------------------------------------
    @classmethod
    def from_conn_string(cls, location: str, **options: Any) -> _Opening:
        """A saver for ``with`` or ``async with``, closed on the way out (as the official
        savers' ``from_conn_string``)."""
        return _Opening(lambda: cls(location, **options))

    def close(self) -> None:
        """Commit what is queued and close; later calls raise StoreClosed."""
        self._engine.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._engine.close)

    def __enter__(self) -> FlatstateSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FlatstateSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"FlatstateSaver({self.location!r})"

    # -- writing --------------------------------------------------------------------
    def _put_job(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = str(conf.get("checkpoint_ns", ""))
        parent_id = conf.get("checkpoint_id")
        stripped: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stripped.pop("channel_values", {}) or {}
        refs: dict[str, tuple[str, list[Any]]] = {}
        pieces: list[tuple[bytes, bytes]] = []
        stored: dict[str, bytes] = {}
        parent_refs: dict[str, tuple[str, list[Any]]] | None = None
        for channel, version in checkpoint["channel_versions"].items():
            if channel in values:
                encoded = self._encodings.encode(self.serde, values[channel])
                refs[channel] = (str(version), encoded.manifest)
                pieces.extend(encoded.pieces)
                if encoded.data is not None:
                    stored[channel] = encoded.data
            elif channel not in new_versions and parent_id:
                # Unchanged and not handed over: the value the parent stored at this version.
                if parent_refs is None:
                    entry = self._engine.fetch(thread_id, ns, parent_id)
                    parent_refs = _unpack_refs(entry.row.refs) if entry else {}
                kept = parent_refs.get(channel)
                if kept is not None and kept[0] == str(version):
                    refs[channel] = kept
        md = get_checkpoint_metadata(config, metadata)
        run_id = md.get("run_id")
        type_, data = self.serde.dumps_typed(stripped)
        meta_type, meta = self.serde.dumps_typed(md)
        row = Row(
            thread_id,
            ns,
            checkpoint["id"],
            parent_id,
            run_id if isinstance(run_id, str) else None,
            type_,
            bytes(data),
            meta_type,
            bytes(meta),
            _pack(refs),
        )
        result: RunnableConfig = {
            "configurable": {
                "thread_id": conf["thread_id"],
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return self._engine.put_job(row, pieces, stored, result)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        result: RunnableConfig = self._engine.write(
            self._put_job(config, checkpoint, metadata, new_versions)
        )
        return result

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self._needs_parent(config, checkpoint, new_versions):
            job = await asyncio.to_thread(self._put_job, config, checkpoint, metadata, new_versions)
        else:
            job = self._put_job(config, checkpoint, metadata, new_versions)
        result: RunnableConfig = await self._engine.awrite(job)
        return result

    @staticmethod
    def _needs_parent(
        config: RunnableConfig, checkpoint: Checkpoint, new_versions: ChannelVersions
    ) -> bool:
        values = checkpoint.get("channel_values") or {}
        return bool(config["configurable"].get("checkpoint_id")) and any(
            c not in values and c not in new_versions for c in checkpoint["channel_versions"]
        )

    def _writes_job(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Any:
        conf = config["configurable"]
        key = (str(conf["thread_id"]), str(conf.get("checkpoint_ns", "")), conf["checkpoint_id"])
        rows = []
        pieces: list[tuple[bytes, bytes]] = []
        for idx, (channel, value) in enumerate(writes):
            # A node's write is often the whole new value of a channel: by content too.
            encoded = self._encodings.encode(self.serde, value)
            manifest = encoded.manifest
            if manifest[0] == INLINE:
                type_, data = manifest[1], manifest[2]
            else:
                type_, data = PIECES_TYPE, pack_manifest(manifest)
                pieces.extend(encoded.pieces)
            index = WRITES_IDX_MAP.get(channel, idx)
            rows.append(WriteRow(task_id, index, channel, type_, bytes(data), task_path))
        return self._engine.writes_job(key, rows, pieces)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._engine.write(self._writes_job(config, writes, task_id, task_path))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._engine.awrite(self._writes_job(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._engine.write(self._engine.delete_thread([str(thread_id)]))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._engine.awrite(self._engine.delete_thread([str(thread_id)]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) of these runs, in every thread."""
        self._engine.write(self._engine.delete_for_runs(_ids(run_ids, "run_ids")))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._engine.awrite(self._engine.delete_for_runs(_ids(run_ids, "run_ids")))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread, ancestors included; the copy
        shares the source's stored values (no value is stored twice)."""
        self._engine.write(self._engine.copy_thread(str(source_thread_id), str(target_thread_id)))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._engine.awrite(
            self._engine.copy_thread(str(source_thread_id), str(target_thread_id))
        )

    def _prune_job(self, thread_ids: Sequence[str], strategy: str) -> Any:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        return self._engine.prune(_ids(thread_ids, "thread_ids"), strategy, self._delta_channels)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's latest checkpoint and the ancestors its
        delta channels still need; ``delete``: delete the threads."""
        self._engine.write(self._prune_job(thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._engine.awrite(self._prune_job(thread_ids, strategy))

    def _delta_channels(self, meta_type: str, metadata: bytes) -> set[str]:
        md = self.serde.loads_typed((meta_type, metadata))
        counters = md.get("counters_since_delta_snapshot") if isinstance(md, dict) else None
        return set(counters) if isinstance(counters, dict) else set()

    # -- reading --------------------------------------------------------------------
    @staticmethod
    def _address(config: RunnableConfig) -> tuple[str, str, str | None]:
        conf = config["configurable"]
        # An empty checkpoint_id means none, as in LangGraph's own savers: the latest.
        thread, ns = str(conf["thread_id"]), str(conf.get("checkpoint_ns", ""))
        return thread, ns, get_checkpoint_id(config) or None

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        entry = self._engine.fetch(*self._address(config))
        if entry is None:
            return None
        found = self._tuple(entry, self._engine.bodies)
        assert found is not None
        return found

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._engine.cache.rows_enabled:
            # Answered inline when the cache holds everything: no I/O on the loop.
            entry = self._engine.fetch_cached(*self._address(config))
            if entry is not MISS and entry is not None:
                found = self._tuple(entry, self._engine.cached_bodies)
                if found is not None:
                    return found
        return await asyncio.to_thread(self.get_tuple, config)

    def _tuple(
        self, entry: Entry, fetch: Callable[[list[bytes]], dict[bytes, bytes] | None]
    ) -> CheckpointTuple | None:
        """The tuple of a row; None if ``fetch`` (of the pieces it needs) returns None."""
        row, serde = entry.row, self.serde
        refs: dict[str, tuple[str, list[Any]]] = entry.refs
        if refs is None:
            refs = entry.refs = _unpack_refs(row.refs)
        decoded = entry.values
        writes = entry.sorted_writes()  # the pieces fetched and the writes shown agree
        if len(decoded) == len(refs) and not writes:
            # Every value is in the cache as a copier, and no write needs a piece.
            values = {channel: decoded[channel]() for channel in refs}
            pending: list[tuple[str, str, Any]] = []
        else:
            manifests = [
                m
                for channel, (_, m) in refs.items()
                if channel not in entry.joined and channel not in decoded
            ]
            manifests += [unpack_manifest(w.value) for w in writes if w.type == PIECES_TYPE]
            bodies = _fetch_all(manifests, fetch)
            if bodies is None:
                return None
            values = {
                channel: self._value(entry, channel, m, bodies) for channel, (_, m) in refs.items()
            }
            pending = [(w.task_id, w.channel, self._write_value(w, bodies)) for w in writes]
        checkpoint = serde.loads_typed((row.type, row.checkpoint))
        checkpoint["channel_values"] = values
        address = {"thread_id": row.thread_id, "checkpoint_ns": row.checkpoint_ns}
        return CheckpointTuple(
            config={"configurable": {**address, "checkpoint_id": row.checkpoint_id}},
            checkpoint=checkpoint,
            metadata=serde.loads_typed((row.meta_type, row.metadata)),
            parent_config=(
                {"configurable": {**address, "checkpoint_id": row.parent_id}}
                if row.parent_id
                else None
            ),
            pending_writes=pending,
        )

    def _value(
        self, entry: Entry, channel: str, manifest: list[Any], bodies: dict[bytes, bytes]
    ) -> Any:
        """A channel's value, fresh: copied from the cache, or decoded (and then kept as a
        copier where :func:`copier` makes one)."""
        fresh = entry.values.get(channel)
        if fresh is not None:
            return fresh()
        cache = self._engine.cache
        kind = manifest[0]
        if kind == INLINE:
            type_, data = manifest[1], manifest[2]
        else:
            type_ = manifest[1] if kind == WHOLE else "msgpack"
            data = entry.joined.get(channel)
            if data is None:
                type_, data = assemble(manifest, bodies.__getitem__)
                cache.remember_joined(entry, channel, data)
        value = self.serde.loads_typed((type_, data))
        make = copier(value) if cache.rows_enabled else None
        if make is None:
            return value
        # This caller gets a copy too: the cached value must stay as decoded.
        cache.remember_value(entry, channel, make, len(data))
        return make()

    def _write_value(self, write: WriteRow, bodies: dict[bytes, bytes]) -> Any:
        if write.type == PIECES_TYPE:
            return decode_value(self.serde, unpack_manifest(write.value), bodies.__getitem__)
        return self.serde.loads_typed((write.type, write.value))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        conf = config["configurable"] if config else {}
        thread_id = conf.get("thread_id")
        ns = conf.get("checkpoint_ns")
        left = limit
        for entry in self._engine.scan(
            str(thread_id) if thread_id is not None else None,
            str(ns) if ns is not None else None,
            conf.get("checkpoint_id") or None,
            (get_checkpoint_id(before) or None) if before else None,
        ):
            if left is not None and left <= 0:
                return
            if filter:
                metadata = self.serde.loads_typed((entry.row.meta_type, entry.row.metadata))
                if not all(metadata.get(k) == v for k, v in filter.items()):
                    continue
            found = self._tuple(entry, self._engine.bodies)
            assert found is not None
            yield found
            if left is not None:
                left -= 1

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def read() -> list[CheckpointTuple]:
            return list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await asyncio.to_thread(read):
            yield item


def _fetch_all(
    manifests: list[list[Any]], fetch: Callable[[list[bytes]], dict[bytes, bytes] | None]
) -> dict[bytes, bytes] | None:
    """Every piece the manifests need: their own, then those their list pieces list."""
    needed = [d for manifest in manifests for d in manifest_digests(manifest)]
    if not needed:
        return {}
    bodies = fetch(needed)
    if bodies is None:
        return None
    listed = [d for m in manifests if m[0] == LISTED for d in listing(bodies[m[1]])]
    if listed:
        more = fetch(listed)
        if more is None:
            return None
        bodies.update(more)
    return bodies


class _Opening:
    """What ``from_conn_string`` returns: ``with`` opens here, ``async with`` on a worker
    thread; both close the saver on the way out."""

    def __init__(self, open_: Any) -> None:
        self._open = open_
        self._saver: FlatstateSaver | None = None

    def __enter__(self) -> FlatstateSaver:
        saver: FlatstateSaver = self._open()
        self._saver = saver
        return saver

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saver is not None:
            self._saver.close()

    async def __aenter__(self) -> FlatstateSaver:
        saver: FlatstateSaver = await asyncio.to_thread(self._open)
        self._saver = saver
        return saver

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saver is not None:
            await self._saver.aclose()


def _ids(values: Sequence[str], name: str) -> list[str]:
    """The ids of a sequence; a lone string is refused, as LangGraph's PostgresSaver does
    (iterated, "alice" would name the threads "a", "l", "i", "c" and "e")."""
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be a sequence of ids, not a {type(values).__name__}")
    return [str(v) for v in values]
