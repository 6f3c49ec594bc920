"""Receive a multipart upload straight to disk, enforcing the limits while the bytes arrive.

The request body is parsed as it streams in (`python_multipart`'s incremental parser), so an upload is never
held in memory: file bytes go to a server-named file (mode 0600, created exclusively) in the request's private
folder. Limits are checked on the way:

- a Content-Length beyond the limit is refused before a byte is read (413);
- the file part is counted and the upload cut off at the first byte over the limit (413);
- after the first `peek_bytes`, `peek(path)` may look at what arrived (the server reads the container header
  there, so a video whose header already says it is too long is refused without receiving the rest);
- small form fields are capped in size and number, unknown ones refused (a typo must not be ignored);
- a client that stops sending for `idle_seconds` is answered 408, so that a stalled upload frees its place.

The client's file name is kept only as a label (`filename`); it never becomes part of a path.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mgsv.serve.http_errors import ApiError

MAX_FIELD_BYTES = 1024
MAX_FIELDS = 16
MAX_HEADER_BYTES = 16 * 1024  # all part headers together
BODY_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and small fields around the file
PEEK_BYTES = 1024 * 1024
IDLE_SECONDS = 60.0  # = Limits.upload_idle_seconds


@dataclass
class ReceivedUpload:
    """A file received to `path`, with the request's other form fields."""

    path: Path
    size: int
    filename: str | None
    content_type: str | None
    fields: dict[str, str] = field(default_factory=dict)


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MB" if count >= 1024 * 1024 else f"{count} bytes"


class _Receiver:
    """Parser callbacks: collect part headers and fields, write the file part (see `receive_upload`)."""

    def __init__(self, target: Path, file_field: str, allowed_fields: frozenset[str], max_bytes: int) -> None:
        self.target = target
        self.file_field = file_field
        self.allowed_fields = allowed_fields
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.size = 0
        self.filename: str | None = None
        self.content_type: str | None = None
        self.have_file = False
        self.handle = None
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._field_name: str | None = None
        self._field_value = bytearray()
        self.in_file = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_value = bytearray()
        self.in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _count_header(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > MAX_HEADER_BYTES:
            raise ApiError(400, "malformed_upload", "the multipart part headers are too large")

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1")
        self._header_name, self._header_value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise ApiError(400, "malformed_upload", "a multipart part has no Content-Disposition form-data name")
        name = options[b"name"].decode("utf-8", "replace")
        if name == self.file_field:
            if self.have_file:
                raise ApiError(400, "malformed_upload", f"send one file in the field {self.file_field!r}, not several")
            if b"filename" not in options:
                raise ApiError(
                    400, "malformed_upload", f"the field {self.file_field!r} must be a file, not a text value"
                )
            self.have_file = True
            self.in_file = True
            self.filename = options[b"filename"].decode("utf-8", "replace")[:255]
            self.content_type = self._headers.get("content-type")
            # O_EXCL: the name is fresh, and nothing (a planted link) can be there before us.
            fd = os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self.handle = os.fdopen(fd, "wb")
            return
        if name not in self.allowed_fields:
            known = ", ".join(sorted({self.file_field, *self.allowed_fields}))
            raise ApiError(422, "unknown_field", f"unknown form field {name!r}; this endpoint takes {known}")
        if name in self.fields or len(self.fields) >= MAX_FIELDS:
            raise ApiError(400, "malformed_upload", f"the form field {name!r} is given more than once")
        self._field_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.size += end - start
            if self.size > self.max_bytes:
                raise ApiError(
                    413,
                    "upload_too_large",
                    f"the uploaded file is larger than this server's limit of {_megabytes(self.max_bytes)}",
                )
            assert self.handle is not None
            # A blocking write, but of one network chunk (<= 64 KB) into the page cache: microseconds.
            self.handle.write(data[start:end])
        elif self._field_name is not None:
            self._field_value += data[start:end]
            if len(self._field_value) > MAX_FIELD_BYTES:
                raise ApiError(422, "invalid_field", f"the form field {self._field_name!r} is too long")

    def _part_end(self) -> None:
        if self.in_file:
            assert self.handle is not None
            self.handle.close()
            self.handle = None
            self.in_file = False
        elif self._field_name is not None:
            try:
                self.fields[self._field_name] = self._field_value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(422, "invalid_field", f"the form field {self._field_name!r} is not UTF-8") from exc

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


async def _with_idle_timeout(chunks: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The chunks of a body, or ApiError 408 when none arrives for `seconds`."""
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), seconds)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError as exc:
            raise ApiError(
                408, "upload_stalled", f"no upload data arrived for {seconds:g} s; the upload was abandoned"
            ) from exc
        yield chunk


async def receive_upload(
    request: Request,
    target: Path,
    *,
    file_field: str,
    max_bytes: int,
    allowed_fields: frozenset[str] = frozenset(),
    peek: Callable[[Path], Awaitable[None]] | None = None,
    peek_bytes: int = PEEK_BYTES,
    idle_seconds: float = IDLE_SECONDS,
) -> ReceivedUpload:
    """Stream a multipart/form-data request into `target` (see the module docstring); ApiError on any problem."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(
            415,
            "not_multipart",
            f"send the file as multipart/form-data with the file in the field {file_field!r}",
        )
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "bad_request", "the Content-Length header is not a number")
        if int(length) > max_bytes + BODY_OVERHEAD:
            raise ApiError(
                413,
                "upload_too_large",
                f"the request is {_megabytes(int(length))}; this server accepts files up to {_megabytes(max_bytes)}",
            )
    receiver = _Receiver(target, file_field, allowed_fields, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks(), max_size=max_bytes + BODY_OVERHEAD)
    peeked = peek is None
    received = 0
    try:
        async for chunk in _with_idle_timeout(request.stream(), idle_seconds):
            if not chunk:
                continue
            received += len(chunk)
            if received > max_bytes + BODY_OVERHEAD:  # without Content-Length (chunked), or bytes around the file
                raise ApiError(
                    413,
                    "upload_too_large",
                    f"the request is larger than this server's upload limit of {_megabytes(max_bytes)}",
                )
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(400, "malformed_upload", f"the multipart body is malformed ({exc})") from exc
            if not peeked and receiver.size >= peek_bytes:
                peeked = True
                if receiver.handle is not None:
                    receiver.handle.flush()
                assert peek is not None
                await peek(target)
        try:
            parser.finalize()
        except MultipartParseError as exc:
            raise ApiError(400, "malformed_upload", f"the multipart body is malformed ({exc})") from exc
    except ClientDisconnect as exc:
        raise ApiError(400, "upload_interrupted", "the client disconnected before the upload was complete") from exc
    finally:
        receiver.close()
    if not receiver.have_file:
        raise ApiError(422, "missing_file", f"no file in the form field {file_field!r}")
    if receiver.in_file:
        raise ApiError(400, "malformed_upload", "the multipart body ended in the middle of the file")
    if receiver.size == 0:
        raise ApiError(400, "empty_upload", "the uploaded file is empty (0 bytes)")
    return ReceivedUpload(target, receiver.size, receiver.filename, receiver.content_type, receiver.fields)
