"""A streaming ``multipart/form-data`` reader for file uploads.

The body is parsed as it arrives (python-multipart's push parser); the file part
goes straight into a ``FileWriter`` that enforces the size limit, so an oversized
upload is refused without being held in memory or read to its end. Small text
fields are kept; everything else about the form is bounded too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.files import FileWriter, JsonlCheck

MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
FORM_OVERHEAD = 64 * 1024  # what the form around the file may add to Content-Length


@dataclass
class Upload:
    """The form of one upload: its text fields and, once read, its file (still uncommitted)."""

    fields: dict[str, str] = field(default_factory=dict)
    writer: FileWriter | None = None
    filename: str = ""
    check: JsonlCheck = field(default_factory=JsonlCheck)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _Events:
    """python-multipart's callbacks are synchronous: record them, and act on them between chunks."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.callbacks: Any = {
            "on_part_begin": lambda: self.items.append(("begin", b"")),
            "on_header_field": lambda d, s, e: self.items.append(("hfield", d[s:e])),
            "on_header_value": lambda d, s, e: self.items.append(("hvalue", d[s:e])),
            "on_header_end": lambda: self.items.append(("hend", b"")),
            "on_headers_finished": lambda: self.items.append(("headers", b"")),
            "on_part_data": lambda d, s, e: self.items.append(("data", d[s:e])),
            "on_part_end": lambda: self.items.append(("end", b"")),
        }

    def take(self) -> list[tuple[str, bytes]]:
        items, self.items = self.items, []
        return items


async def read_upload(request: Request, writer: FileWriter, idle_timeout_s: float) -> Upload:
    """Read the form, streaming its one file part into ``writer``; on any error the writer is aborted.

    A large upload may take long, but each chunk must follow the last within
    ``idle_timeout_s`` (408 otherwise), so a trickled body cannot hold a connection.
    """
    ctype, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("Upload files as multipart/form-data.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > writer.limit + FORM_OVERHEAD:
        raise PayloadTooLarge(f"The file exceeds the limit of {writer.limit} bytes.", code="file_too_large")
    events = _Events()
    parser = MultipartParser(boundary, events.callbacks)
    upload = Upload()
    part = _Part()
    header_name = b""
    header_value = b""
    try:
        async for chunk in _chunks(request, idle_timeout_s):
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise InvalidRequest(f"The multipart body is malformed: {exc}.") from None
            for kind, data in events.take():
                if kind == "begin":
                    part, header_name, header_value = _Part(), b"", b""
                elif kind == "hfield":
                    header_name += data
                elif kind == "hvalue":
                    header_value += data
                elif kind == "hend":
                    # latin-1 keeps the bytes as they came: parse_options_header re-encodes them as latin-1,
                    # and the name and filename are decoded as UTF-8 after it.
                    part.headers[header_name.decode("latin-1").lower()] = header_value.decode("latin-1")
                    header_name, header_value = b"", b""
                elif kind == "headers":
                    _begin_part(part, upload, writer)
                elif kind == "data":
                    await _part_data(part, upload, data)
                elif kind == "end":
                    _end_part(part, upload)
        try:
            parser.finalize()
        except FormParserError as exc:
            raise InvalidRequest(f"The multipart body is malformed: {exc}.") from None
    except BaseException:
        await writer.abort()
        raise
    return upload


async def _chunks(request: Request, idle_timeout_s: float) -> Any:
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(f"The upload stalled for {idle_timeout_s:g}s.") from None
        yield chunk


def _begin_part(part: _Part, upload: Upload, writer: FileWriter) -> None:
    _, params = parse_options_header(part.headers.get("content-disposition"))
    part.name = params.get(b"name", b"").decode("utf-8", "replace")
    filename = params.get(b"filename")
    if filename is not None:
        if upload.writer is not None:
            raise InvalidRequest("Upload one file per request.", param="file")
        if part.name != "file":
            raise InvalidRequest("The file must be sent as the form field 'file'.", param="file")
        part.is_file = True
        upload.writer = writer
        upload.filename = filename.decode("utf-8", "replace") or "upload"
    elif len(upload.fields) >= MAX_FIELDS:
        raise InvalidRequest("The form has too many fields.")


async def _part_data(part: _Part, upload: Upload, data: bytes) -> None:
    if part.is_file:
        assert upload.writer is not None
        await upload.writer.write(data)
        upload.check.feed(data)
        return
    part.data += data
    if len(part.data) > MAX_FIELD_BYTES:
        raise InvalidRequest(f"The form field {part.name!r} is too long.", param=part.name or None)


def _end_part(part: _Part, upload: Upload) -> None:
    if not part.is_file and part.name:
        upload.fields[part.name] = part.data.decode("utf-8", "replace")
