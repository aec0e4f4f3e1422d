"""``/v1/files``: upload (checked as fine-tuning JSONL), list, retrieve, content, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response

from ..deps import file_or_404, get_store, page
from ..formats import training_file_examples
from ..schemas import APIError, Deleted
from ..store import Store

router = APIRouter(prefix="/v1/files")


@router.post("")
def upload_file(file: UploadFile = File(...), purpose: str = Form(...), store: Store = Depends(get_store)):
    if purpose != "fine-tune":
        raise APIError(
            400,
            f"purpose {purpose!r} is not supported here: this server keeps files for fine-tuning "
            "only (purpose='fine-tune')",
            param="purpose",
        )
    content = file.file.read()
    try:
        _, wrong = training_file_examples(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise APIError(400, f"{file.filename}: not UTF-8 text; a fine-tuning file is JSONL", param="file") from None
    if wrong:
        raise APIError(
            400,
            f"Invalid file format for fine-tuning: {file.filename}: {wrong}. "
            'Each line must be a chat example {"messages": [...]} or {"prompt", "completion"}; '
            "`gptnb prepare-data` checks and converts a file.",
            param="file",
            code="invalid_file_format",
        )
    return store.add_file(file.filename or "upload.jsonl", purpose, content)


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
    return Response(store.content_path(file["id"]).read_bytes(), media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=Deleted)
def delete_file(file: dict = Depends(file_or_404), store: Store = Depends(get_store)):
    store.delete_file(file["id"])
    return Deleted(id=file["id"], object="file")
