"""The file store behind ``/v1/files``: bytes in a local directory, metadata in Redis.

An upload streams through a ``FileWriter`` into a hidden part file, with the
size limit enforced as the bytes arrive; only a complete file is renamed into
place and gets its metadata. Metadata expires with the file (``expires_at``),
and the sweep removes bytes whose metadata is gone, so Redis owns each file's
lifetime. Several replicas share the store by sharing the directory.
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import FilesConfig
from gateway.errors import InvalidRequest, PayloadTooLarge, QueueUnavailable
from gateway.queue.keys import Keys

T = TypeVar("T")

UPLOAD_PURPOSES = frozenset({"batch"})  # what clients may upload: input files of the Batch API
OUTPUT_PURPOSE = "batch_output"  # what the gateway writes: batch output and error files
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400  # OpenAI's bounds for expires_after[seconds]
ORPHAN_GRACE_S = 300.0  # bytes on disk without metadata for this long are removed
_FLUSH_BYTES = 1 << 20

# KEYS: file, index. ARGV: ttl_s, id, then field/value pairs. The index lives as long as its newest member.
_SAVE = """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 1
"""


def sortable_id(prefix: str) -> str:
    """An unguessable id (128 random bits) whose text sorts by creation time, for cursor pagination."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(16)}"


def expiry_seconds(anchor: str | None, seconds: str | None, default: int) -> int:
    """The lifetime an upload asks for with ``expires_after[anchor]`` / ``expires_after[seconds]``."""
    if anchor is None and seconds is None:
        return default
    if anchor != "created_at":
        raise InvalidRequest("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
    try:
        value = int(seconds or "")
    except ValueError:
        raise InvalidRequest("expires_after[seconds] must be an integer.", param="expires_after.seconds") from None
    if not MIN_EXPIRY_S <= value <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"expires_after[seconds] must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}.", param="expires_after.seconds"
        )
    return value


class JsonlCheck:
    """Fed an upload chunk by chunk: is it JSON Lines (UTF-8 text whose first line opens an object)?

    Only the shape of a JSONL file is checked here; each line's JSON is the batch
    validation's business, which reports it with line numbers.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._first: str | None = None  # the first non-blank character, once seen
        self.problem: str | None = None

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if self.problem is not None:
            return
        try:
            text = self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError:
            self.problem = "The file is not UTF-8 text."
            return
        if "\x00" in text:
            self.problem = "The file is binary, not JSON Lines."
            return
        if self._first is None:
            stripped = text.lstrip("\ufeff \t\r\n")
            if stripped:
                self._first = stripped[0]
                if self._first != "{":
                    self.problem = "Each line of a JSONL file must be a JSON object."

    def finish(self) -> str | None:
        self.feed(b"", final=True)
        return self.problem


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    client: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str

    def to_object(self) -> dict[str, Any]:
        """The OpenAI ``file`` object."""
        return {
            "id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
            "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
            "status": "processed", "status_details": None,
        }

    def to_hash(self) -> dict[str, str | int]:
        return {"id": self.id, "client": self.client, "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose}

    @classmethod
    def from_hash(cls, h: dict[builtins.bytes, builtins.bytes]) -> FileRecord:
        def s(key: str) -> str:
            return h.get(key.encode(), b"").decode()

        return cls(id=s("id"), client=s("client"), bytes=int(s("bytes") or 0), created_at=int(s("created_at") or 0),
                   expires_at=int(s("expires_at") or 0), filename=s("filename"), purpose=s("purpose"))


class FileWriter:
    """Bytes of one new file on their way to disk; nothing is visible until ``commit``."""

    def __init__(self, store: FileStore, file_id: str, limit: int) -> None:
        self.store = store
        self.id = file_id
        self.limit = limit
        self.size = 0
        self._part = store.dir / f".{file_id}.part"
        self._fh: Any = None
        self._buffer = bytearray()

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise PayloadTooLarge(f"The file exceeds the limit of {self.limit} bytes.", code="file_too_large")
        self._buffer += data
        if len(self._buffer) >= _FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self._fh is None:
            self._fh = await asyncio.to_thread(open, self._part, "wb")
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(self._fh.write, chunk)

    async def commit(self, client: str, filename: str, purpose: str, ttl_s: int) -> FileRecord:
        await self._flush()
        await asyncio.to_thread(self._fh.close)
        self._fh = None
        await asyncio.to_thread(os.replace, self._part, self.store.dir / self.id)
        now = int(time.time())
        record = FileRecord(self.id, client, self.size, now, now + ttl_s, filename, purpose)
        try:
            await self.store.save(record)
        except BaseException:
            await asyncio.to_thread(_unlink, self.store.dir / self.id)
            raise
        return record

    async def abort(self) -> None:
        if self._fh is not None:
            await asyncio.to_thread(self._fh.close)
            self._fh = None
        await asyncio.to_thread(_unlink, self._part)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class FileStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, config: FilesConfig) -> None:
        self.redis = redis
        self.keys = keys
        self.config = config
        self.dir = Path(config.dir)
        self._save = redis.register_script(_SAVE)

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    async def _io(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(f"The file store is unavailable ({type(exc).__name__}).") from None

    def writer(self, limit: int | None = None) -> FileWriter:
        return FileWriter(self, sortable_id("file-"), self.config.max_bytes if limit is None else limit)

    def path(self, record: FileRecord) -> Path:
        return self.dir / record.id

    async def save(self, record: FileRecord) -> None:
        args: list[Any] = [max(record.expires_at - int(time.time()), 1), record.id]
        for k, v in record.to_hash().items():
            args += [k, v]
        await self._io(lambda: self._save(keys=[self.keys.file(record.id), self.keys.client_files(record.client)],
                                          args=args))

    async def get(self, file_id: str, client: str | None = None) -> FileRecord | None:
        """The file's record; ``None`` when it does not exist, expired, or (with ``client``) is another's."""
        h: Any = await self._io(lambda: self.redis.hgetall(self.keys.file(file_id)))
        if not h:
            return None
        record = FileRecord.from_hash(h)
        if client is not None and record.client != client:
            return None
        return record

    async def delete(self, record: FileRecord) -> None:
        async def op() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.file(record.id))
                pipe.zrem(self.keys.client_files(record.client), record.id)
                await pipe.execute()

        await self._io(op)
        await asyncio.to_thread(_unlink, self.path(record))

    async def page(self, client: str, *, purpose: str | None, after: str | None, limit: int,
                   descending: bool) -> tuple[list[FileRecord], bool]:
        """Up to ``limit`` of the client's files after the cursor, and whether more follow."""
        index = self.keys.client_files(client)
        found: list[FileRecord] = []
        cursor = after
        while len(found) <= limit:
            page = min(max(2 * (limit + 1 - len(found)), 16), 1000)
            ids = await self._io(lambda: page_ids(self.redis, index, cursor, page, descending))
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for fid in ids:
                    pipe.hgetall(self.keys.file(fid))
                hashes = await self._io(pipe.execute)
            gone = [fid for fid, h in zip(ids, hashes) if not h]
            if gone:
                await self._io(lambda: self.redis.zrem(index, *gone))
            records = (FileRecord.from_hash(h) for h in hashes if h)
            found += [r for r in records if purpose is None or r.purpose == purpose]
            cursor = ids[-1]
            if len(ids) < page:
                break
        return found[:limit], len(found) > limit

    async def sweep_disk(self) -> int:
        """Remove bytes whose metadata expired or was never written (a crash mid-upload); returns how many."""
        now = time.time()
        entries = await asyncio.to_thread(_scan, self.dir)
        removed = 0
        settled = [(name, mtime) for name, mtime in entries if now - mtime > ORPHAN_GRACE_S]
        for i in range(0, len(settled), 500):
            chunk = settled[i:i + 500]
            names = [name for name, _ in chunk if not name.startswith(".")]
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.exists(self.keys.file(name))
                exists = dict(zip(names, await self._io(pipe.execute)))
            for name, _ in chunk:
                if name.startswith(".") or not exists.get(name):
                    await asyncio.to_thread(_unlink, self.dir / name)
                    removed += 1
        return removed


def _scan(directory: Path) -> list[tuple[str, float]]:
    try:
        with os.scandir(directory) as it:
            return [(e.name, e.stat().st_mtime) for e in it if e.is_file()]
    except FileNotFoundError:
        return []


async def page_ids(redis: aioredis.Redis, index: str, after: str | None, count: int, descending: bool) -> list[str]:
    """Ids of an index (a sorted set of equal scores, ordered by id text) strictly after ``after``."""
    if descending:
        start, end = (f"({after}" if after else "+"), "-"
    else:
        start, end = (f"({after}" if after else "-"), "+"
    ids: Any = await redis.zrange(index, start, end, desc=descending, bylex=True, offset=0, num=count)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]
