"""``/v1/files``: upload (checked as fine-tuning JSONL), list, retrieve, content, delete.

An upload is never held in memory: its multipart body is parsed as it arrives, the file's bytes
go straight to a private temporary file in the data folder, which is checked line by line from
there and renamed into place; a refused upload leaves nothing behind. At most `UPLOADS_AT_ONCE`
are received at a time (`upload_slot`).

Why python-multipart's parser with our callbacks, not Starlette's ``request.form()`` (which wraps the same parser):
at the floor fastapi 0.110 (Starlette 0.36) form fields have no size limit (one came in Starlette 0.40, settable as
``form(max_part_size=)`` from 0.44), and ``form()`` spools the file to the system's temporary folder, to be copied
into the data folder once the whole body has arrived; here the bytes go once, as they arrive, to the private file
that becomes the stored one.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart before 0.0.13
    from multipart.multipart import MultipartParser, parse_options_header

from ...datacheck.formats import training_file_problem
from ..deps import file_or_404, get_store, page, upload_slot
from ..jobs.store import Store
from ..protocol import APIError
from ..wire import Deleted

router = APIRouter(prefix="/v1/files")

FIELD_BYTES = 1024  # the most a form field other than the file may hold (``purpose`` is a word)
FORM = "an upload is a multipart/form-data body with the fields 'file' (the JSONL file) and 'purpose'"


@router.post("", dependencies=[Depends(upload_slot)])
async def upload_file(request: Request, store: Store = Depends(get_store)):
    with store.receiving() as tmp:
        with open(tmp, "wb") as out:
            form = await _receive(request, out)
        purpose = form.fields.get("purpose")
        for field, value in (("file", form.filename), ("purpose", purpose)):
            if value is None:
                raise APIError(400, f"{field}: Field required; {FORM}", param=field)
        if purpose != "fine-tune":
            raise APIError(
                400,
                f"purpose {purpose!r} is not supported here: this server keeps files for fine-tuning "
                "only (purpose='fine-tune')",
                param="purpose",
            )
        name = form.filename or "upload.jsonl"
        wrong = await run_in_threadpool(training_file_problem, _lines(tmp, name))
        if wrong:
            raise APIError(
                400,
                f"Invalid file format for fine-tuning: {name}: {wrong}. "
                'Each line must be a chat example {"messages": [...]} or {"prompt", "completion"}; '
                "`gptnb prepare-data` checks and converts a file.",
                param="file",
                code="invalid_file_format",
            )
        return await run_in_threadpool(store.add_file, name, purpose, tmp)


class _Form:
    """The callbacks of a streaming multipart parser: the bytes of the part named ``file`` are queued in
    `pending` for the file; the other fields are kept in `fields` (at most `FIELD_BYTES` each)."""

    def __init__(self):
        self.fields: dict[str, str] = {}
        self.filename: str | None = None  # the file's name once its part began ("" when the client sent none)
        self.pending: list[bytes] = []
        self._header, self._value, self._headers = b"", b"", {}
        self._name, self._data, self._in_file = "", bytearray(), False

    def callbacks(self) -> dict:
        """The callbacks for python-multipart's `MultipartParser`."""
        events = ("part_begin", "header_field", "header_value", "header_end", "headers_finished", "part_data")
        return {f"on_{event}": getattr(self, f"on_{event}") for event in (*events, "part_end")}

    def on_part_begin(self) -> None:
        self._headers, self._data, self._in_file = {}, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise APIError(400, f"a form part has no name; {FORM}")
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name == "file":
            if self.filename is not None:
                raise APIError(400, "the form holds more than one 'file'; upload one file at a time", param="file")
            self.filename, self._in_file = options.get(b"filename", b"").decode("utf-8", "replace"), True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(bytes(data[start:end]))
            return
        self._data += data[start:end]
        if len(self._data) > FIELD_BYTES:
            raise APIError(400, f"the form field {self._name!r} is longer than {FIELD_BYTES} bytes", param=self._name)

    def on_part_end(self) -> None:
        if not self._in_file:
            self.fields[self._name] = self._data.decode("utf-8", "replace")


async def _receive(request: Request, out: BinaryIO) -> _Form:
    """Parse the request's multipart body as it arrives, writing the file part to `out`; the form's fields."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise APIError(400, f"{FORM}; this one is {kind.decode('latin-1') or 'not marked as any'}", param="file")
    form = _Form()
    parser = MultipartParser(options[b"boundary"], form.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if form.pending:
                await run_in_threadpool(out.writelines, form.pending)  # a disk write may wait: not on the loop
                form.pending.clear()
        parser.finalize()
    except ValueError as error:  # python-multipart's parse errors
        raise APIError(400, f"the multipart body cannot be read ({error}); {FORM}", param="file") from None
    except ClientDisconnect:  # nobody to answer; the upload is dropped
        raise APIError(400, "the client closed the connection before the upload ended", param="file") from None
    return form


def _lines(path: Path, name: str) -> Iterator[str]:
    """The lines of an uploaded file, split at ``\\n`` only as `read_jsonl` splits them; 400 at one not UTF-8."""
    with open(path, "rb") as data:
        for number, line in enumerate(data, start=1):
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise APIError(
                    400, f"{name}: line {number} is not UTF-8 text; a fine-tuning file is JSONL", param="file"
                ) from None


@router.get("")
def list_files(
    purpose: str | None = None,
    after: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: str = Query("desc", pattern="^(asc|desc)$"),
    store: Store = Depends(get_store),
):
    files = [f for f in store.files() if purpose is None or f["purpose"] == purpose]
    return page(files[::-1] if order == "desc" else files, after, limit)


@router.get("/{file_id}")
def get_file(file: dict = Depends(file_or_404)):
    return file


@router.get("/{file_id}/content")
def file_content(file: dict = Depends(file_or_404), store: Store = Depends(get_store)):
    return FileResponse(store.content_path(file["id"]), media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=Deleted)
def delete_file(file: dict = Depends(file_or_404), store: Store = Depends(get_store)):
    store.delete_file(file["id"])
    return Deleted(id=file["id"], object="file")
