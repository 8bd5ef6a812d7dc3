"""What the buyers' JSON endpoints (api/buyer.py) and pages (api/buyer_pages.py) share: request
models, and the steps both take for a proven principal (a claim by number, a document with its file,
bank details)."""
from __future__ import annotations

import asyncio
import time
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from api.errors import MAX_ID, Text
from models.db import get_engine
from models.settings import get_settings
from states.bank import mask_account
from tasks.auth import Principal
from tasks.buyer_auth import request_code
from tasks.buyer_claims import ClaimRef, claim_ref
from tasks.documents import DocumentRejected, StoredFile, store
from tasks.intake import NotYourClaim, add_document
from tasks.payouts import BankDetailsNotExpected, submit_bank_details

ClaimNumber = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$", description="Номер заявки, например VZ-0000042-1.")]
ORDER_NUMBER = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$", description="Номер заказа.")
FORBIDDEN = {403: {"description": "Ключ распознан, но этому вызывающему действие не положено (например, токен организатора)."}}
TOO_LARGE = {413: {"description": "Файл больше допустимого размера."}}


async def ask_for_code(request: Request, *, order_number: str, email: str, now: datetime) -> str | None:
    """`request_code` for the caller's address (TooManyCodeRequests past its limit), answered no sooner
    than `buyer_code_floor_ms` after it began: a real order and an unknown one take the same time (the
    same work inside, and this floor over what is left). Returns the outbox key to send AFTER answering."""
    started = time.monotonic()
    client = request.client.host if request.client else "unknown"
    key = await run_in_threadpool(lambda: request_code(get_engine(), order_number=order_number, email=email, now=now, client=client))
    remaining = get_settings().buyer_code_floor_ms / 1000 - (time.monotonic() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)
    return key


def not_found() -> HTTPException:
    return HTTPException(404, detail=[{"loc": ["path", "number"], "msg": "Заявка не найдена.", "type": "not_found"}])


def buyer_claim(number: str, principal: Principal) -> ClaimRef:
    try:
        return claim_ref(get_engine(), number, principal)
    except NotYourClaim:
        raise not_found() from None


class ClaimCreate(BaseModel):
    ticket_id: int = Field(gt=0, le=MAX_ID)
    reason: Literal["voluntary", "illness", "death", "other", "postponed", "cancelled", "replaced"]
    description: Text = Field(default="", max_length=4000)
    name_mismatch_explanation: Text | None = Field(default=None, max_length=1000)


class ClaimPublic(BaseModel):
    id: int
    number: str
    state: str
    quote: dict | None = None
    refund: str | None = None
    flow_run_id: str | None = None


class DocumentCreate(BaseModel):
    kind: Literal["sick_leave_gosuslugi", "eln_copy", "pcr_test", "death_certificate", "other"]
    sick_from: date | None = None
    sick_to: date | None = None
    person_name: Text | None = Field(default=None, max_length=300)
    relation: Literal["parent", "child", "grandparent", "grandchild", "sibling", "spouse"] | None = None
    filename: Text | None = Field(default=None, max_length=300)


_DOCUMENT_SCHEMA = DocumentCreate.model_json_schema()
_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["kind", "file"],
    "properties": {**{k: v for k, v in _DOCUMENT_SCHEMA["properties"].items() if k != "filename"},
                   "file": {"type": "string", "format": "binary", "description": "PDF, JPEG или PNG (проверяется по содержимому)."}},
}
DOCUMENT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _DOCUMENT_SCHEMA},
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
}}}
MULTIPART_SLACK = 64 * 1024  # the form's own fields and boundaries around the file


def _body_errors(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


def _invalid_body(msg: str, type_: str = "invalid") -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body"], "msg": msg, "type": type_}])


async def read_document(request: Request) -> tuple[DocumentCreate, bytes | None, str | None]:
    """The document's facts and, from a multipart form, its file's bytes and name (checked later by `store`)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        limit = get_settings().document_max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
            raise HTTPException(413, detail=[{"loc": ["body", "file"], "msg": f"Файл больше {limit // (1024 * 1024)} МБ.", "type": "too_large"}])
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception:  # noqa: BLE001 - a malformed form is the client's error, whatever the parser raised
            raise _invalid_body("Не удалось прочитать форму: нужен multipart/form-data с полем file.", "form_invalid") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, detail=[{"loc": ["body", "file"], "msg": "Приложите файл документа.", "type": "missing"}])
        data = await upload.read(limit + 1)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "file" and v != ""}
        try:
            facts = DocumentCreate.model_validate({**fields, "filename": (upload.filename or "")[:300] or None})
        except ValidationError as exc:
            raise _body_errors(exc) from None
        return facts, data, upload.filename
    if "json" in content_type:
        try:
            payload = await request.json()
        except ValueError:
            raise _invalid_body("Тело запроса — не JSON.", "json_invalid") from None
        try:
            return DocumentCreate.model_validate(payload), None, None
        except ValidationError as exc:
            raise _body_errors(exc) from None
    raise _invalid_body("Нужен JSON или multipart/form-data с файлом.", "content_type")


def store_file(data: bytes) -> StoredFile:
    try:
        return store(data)
    except DocumentRejected as exc:
        status = 413 if exc.code == "too_large" else 422
        raise HTTPException(status, detail=[{"loc": ["body", "file"], "msg": exc.message_ru, "type": exc.code}]) from None


def attach_document(number: str, principal: Principal, facts: DocumentCreate, data: bytes | None, now: datetime) -> str:
    """Keep the file (when one came) and record the document; the claim's state after it."""
    ref = buyer_claim(number, principal)
    stored = store_file(data) if data is not None else None
    file_facts = {"sha256": stored.sha256, "size": stored.size, "content_type": stored.content_type} if stored else {}
    return add_document(get_engine(), claim_id=ref.id, now=now, actor=principal.audit, **facts.model_dump(), **file_facts)


class BankDetails(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    bik: str = Field(min_length=1, max_length=20, pattern=r"^[0-9 ]+$", description="БИК банка, 9 цифр.")
    account: str = Field(min_length=1, max_length=40, pattern=r"^[0-9 ]+$", description="Номер счёта получателя, 20 цифр.")
    name: Text = Field(min_length=1, max_length=300, description="ФИО получателя, как в банке.")
    inn: str | None = Field(default=None, max_length=20, pattern=r"^[0-9 ]*$", description="ИНН получателя (необязательно).")


class BankDetailsPublic(BaseModel):
    number: str
    state: str
    account_masked: str


def give_bank_details(number: str, principal: Principal, body: BankDetails, now: datetime) -> BankDetailsPublic:
    """Validate (BIK, account control key, name), encrypt and store the details; a claim waiting for them moves on."""
    ref = buyer_claim(number, principal)
    account = body.account.replace(" ", "")
    try:
        problems = submit_bank_details(get_engine(), claim_id=ref.id, bik=body.bik.replace(" ", ""), account=account, name=body.name,
                                       inn=(body.inn or "").replace(" ", "") or None, now=now, actor=principal.audit)
    except BankDetailsNotExpected:
        raise HTTPException(409, detail=[{"loc": ["path", "number"], "msg": "Заявка сейчас не ждёт банковских реквизитов.",
                                          "type": "not_expected"}]) from None
    if problems:
        raise HTTPException(422, detail=[{"loc": ["body", p.field], "msg": p.message_ru, "type": p.code} for p in problems])
    state = claim_ref(get_engine(), number, principal).state
    return BankDetailsPublic(number=ref.number, state=state, account_masked=mask_account(account))


class Withdrawal(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    reason: Text = Field(default="", max_length=2000, description="Почему заявка больше не нужна (необязательно).")


