"""The file store: its pure parts as tables, then the store itself on a real Redis and a real directory."""

from __future__ import annotations

import os
import time

import pytest
import redis.asyncio as aioredis

from gateway.config import FilesConfig
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.files import FileRecord, FileStore, JsonlCheck, expiry_seconds, sortable_id
from gateway.queue.keys import Keys
from tests.support.jobs import namespace


@pytest.mark.parametrize(
    ("chunks", "problem"),
    [
        ([b'{"custom_id": "a"}\n{"custom_id": "b"}\n'], None),
        ([b"\n\n  ", b'\t{"a": 1}\n'], None),  # leading blank lines are fine
        ([b"\xef\xbb\xbf{}\n"], None),  # a UTF-8 byte order mark too
        ([b'{"text": "caf\xc3', b'\xa9"}\n'], None),  # a character split across chunks
        ([b"{ broken json is the batch's business\n"], None),
        ([b""], None),  # empty: the batch reports empty_file
        ([b"custom_id,url\n"], "object"),
        ([b'[{"a": 1}]\n'], "object"),
        ([b'{"a": "\xff"}\n'], "UTF-8"),
        ([b'{"a": 1}\n', b"\x00\x01"], "binary"),
        ([b'{"a": "caf\xc3'], "UTF-8"),  # cut in the middle of a character
    ],
)
def test_the_jsonl_check(chunks: list[bytes], problem: str | None) -> None:
    check = JsonlCheck()
    for chunk in chunks:
        check.feed(chunk)
    found = check.finish()
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("anchor", "seconds", "expected"),
    [
        (None, None, 777),
        ("created_at", "3600", 3600),
        ("created_at", "2592000", 2592000),
        ("created_at", "3599", None),
        ("created_at", "2592001", None),
        ("created_at", "soon", None),
        ("created_at", None, None),
        ("last_active_at", "3600", None),
        (None, "3600", None),
    ],
)
def test_expires_after(anchor: str | None, seconds: str | None, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(InvalidRequest):
            expiry_seconds(anchor, seconds, 777)
    else:
        assert expiry_seconds(anchor, seconds, 777) == expected


def test_ids_sort_by_creation_and_are_unguessable() -> None:
    ids = []
    for _ in range(3):
        ids.append(sortable_id("file-"))
        time.sleep(0.002)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(i.startswith("file-") and len(i) == len("file-") + 12 + 32 for i in ids)
    assert len({sortable_id("x")[13:] for _ in range(100)}) == 100


def test_a_file_record_round_trips_and_renders_as_openai_does() -> None:
    record = FileRecord("file-1", "web", 12, 100, 200, "in.jsonl", "batch")
    assert FileRecord.from_hash({k.encode(): str(v).encode() for k, v in record.to_hash().items()}) == record
    obj = record.to_object()
    assert obj == {"id": "file-1", "object": "file", "bytes": 12, "created_at": 100, "expires_at": 200,
                   "filename": "in.jsonl", "purpose": "batch", "status": "processed", "status_details": None}
    assert "client" not in obj


# -- the store, on a real Redis and a real directory ----------------------------------------------

@pytest.fixture
async def store(redis_server, tmp_path):
    r = aioredis.Redis.from_url(redis_server.url)
    s = FileStore(r, Keys(namespace("files")), FilesConfig(dir=str(tmp_path / "files"), max_bytes=3 << 20))
    s.prepare()
    yield s
    await r.aclose()


async def test_a_large_upload_streams_to_disk_and_reads_back(store: FileStore) -> None:
    writer = store.writer()
    chunk = b'{"custom_id": "x"}\n' * 4096
    for _ in range(40):  # about 3 MB, flushed in pieces
        await writer.write(chunk)
    record = await writer.commit("web", "big.jsonl", "batch", 3600)
    assert record.bytes == len(chunk) * 40 == store.path(record).stat().st_size
    assert store.path(record).read_bytes()[: len(chunk)] == chunk
    assert await store.get(record.id, "web") == record
    assert await store.get(record.id, "other") is None
    assert [p.name for p in store.dir.iterdir()] == [record.id]  # no part file left behind


async def test_an_upload_over_the_limit_leaves_nothing(store: FileStore) -> None:
    writer = store.writer()
    with pytest.raises(PayloadTooLarge):
        for _ in range(8):
            await writer.write(b"x" * (1 << 20))
    await writer.abort()
    assert list(store.dir.iterdir()) == []


async def test_listing_orders_filters_and_pages(store: FileStore) -> None:
    made = []
    for i in range(5):
        writer = store.writer()
        await writer.write(b"{}\n")
        made.append(await writer.commit("web", f"{i}.jsonl", "batch" if i % 2 == 0 else "batch_output", 3600))
        time.sleep(0.002)
    ids = [r.id for r in made]
    page, more = await store.page("web", purpose=None, after=None, limit=2, descending=True)
    assert [r.id for r in page] == ids[::-1][:2] and more
    page, more = await store.page("web", purpose=None, after=ids[2], limit=10, descending=False)
    assert [r.id for r in page] == ids[3:] and not more
    page, _ = await store.page("web", purpose="batch", after=None, limit=10, descending=False)
    assert [r.id for r in page] == ids[0::2]
    await store.delete(made[1])
    page, _ = await store.page("web", purpose=None, after=None, limit=10, descending=False)
    assert [r.id for r in page] == [ids[0], *ids[2:]]
    assert not store.path(made[1]).exists()
    # A deleted file is still a valid cursor: ids sort by time, not by what the index holds.
    page, _ = await store.page("web", purpose=None, after=ids[1], limit=10, descending=False)
    assert [r.id for r in page] == ids[2:]


async def test_the_disk_sweep_removes_bytes_without_metadata(store: FileStore) -> None:
    writer = store.writer()
    await writer.write(b"{}\n")
    kept = await writer.commit("web", "kept.jsonl", "batch", 3600)
    orphan, part, fresh = store.dir / "file-orphan", store.dir / ".file-dead.part", store.dir / "file-just-now"
    for path in (orphan, part, fresh):
        path.write_bytes(b"{}\n")
    old = time.time() - 3600
    for path in (orphan, part, store.path(kept)):
        os.utime(path, (old, old))
    assert await store.sweep_disk() == 2
    assert sorted(p.name for p in store.dir.iterdir()) == sorted([kept.id, fresh.name])
