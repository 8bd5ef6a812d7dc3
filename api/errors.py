"""One shape for every error the API answers, and the handlers that keep bad input and a sick database off 500.

Every 4xx/5xx body is `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` with a Russian `msg`
(buyers and organizers read it). Ids are bounded to the 32-bit INTEGER columns they address, and text
refuses control characters, so the database never sees a value it would refuse with an exception.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.claim_store import ClaimNotFound, ConflictError, InvalidTrigger, TransitionRefused
from models.db import db_trouble

log = logging.getLogger("vozvrat.api")

MAX_ID = 2**31 - 1  # PostgreSQL INTEGER: every id column; 2**31 used to answer 500 on every endpoint
MAX_KOPECKS = 2**63 - 1  # BIGINT money columns
RETRY_AFTER_S = 5  # how long a client should wait when the database is unavailable

ClaimId = Annotated[int, Path(gt=0, le=MAX_ID, description="Номер заявки в системе (id).", examples=[1])]
Id = Annotated[int, Field(gt=0, le=MAX_ID)]


# --- text: no control characters -----------------------------------------------------------------

# C0 and C1 controls except tab, LF, CR.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Lone surrogates: valid JSON escapes, not storable text. pydantic refuses them for `str` but lets them
# through an `Optional[str]` union, and the database then fails to encode them.
_SURROGATE = re.compile("[\ud800-\udfff]")
# The same rule for clients and fuzzers, in the schema (ECMA-262 regex).
TEXT_PATTERN = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"


TEXT_MESSAGES = {
    "control_characters": "Текст содержит управляющие символы (например, NUL); уберите их.",
    "string_unicode": "Текст содержит недопустимые символы Юникода.",
}


def _printable(value: str) -> str:
    """A NUL in any text field used to answer 500 on PostgreSQL ("text fields cannot contain NUL")."""
    if _FORBIDDEN.search(value):
        raise PydanticCustomError("control_characters", "text contains control characters")
    if _SURROGATE.search(value):
        raise PydanticCustomError("string_unicode", "text contains lone surrogates")
    return value


Text = Annotated[str, AfterValidator(_printable), Field(json_schema_extra={"pattern": TEXT_PATTERN})]


def _first_unstorable(value: Any, loc: list[str | int]) -> tuple[list[str | int], str] | None:
    """Where in a parsed JSON body the first string with a control character or a lone surrogate is."""
    if isinstance(value, str):
        if _FORBIDDEN.search(value):
            return loc, "control_characters"
        if _SURROGATE.search(value):
            return loc, "string_unicode"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_unstorable(item, [*loc, key])
        if found:
            return found
    return None


class RejectControlCharacters:
    """Every JSON body, whatever the endpoint: a text value with a NUL or another control character is
    422 at that field before any endpoint runs (the rule holds for fields added later too).

    Pure ASGI: the body is read once, checked, and handed on unchanged."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
        if b"json" not in content_type:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
            found = _first_unstorable(parsed, ["body"])
        except UnicodeDecodeError:
            # FastAPI would answer a bare 400 "There was an error parsing the body".
            return await error_response(422, ["body"], "Тело запроса — не JSON в кодировке UTF-8.", "json_invalid")(scope, receive, send)
        except RecursionError:
            return await error_response(422, ["body"], "Слишком глубокая вложенность JSON.", "json_invalid")(scope, receive, send)
        except ValueError:
            found = None  # FastAPI answers json_invalid
        if found:
            loc, kind = found
            return await error_response(422, loc, TEXT_MESSAGES[kind], kind)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --- the error model -----------------------------------------------------------------------------

class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Где ошибка: body/path/header и имя поля.")
    msg: str = Field(description="Сообщение на русском.")
    type: str = Field(description="Код ошибки для программ.")


class ErrorResponse(BaseModel):
    detail: list[ErrorItem]


def error_response(status: int, loc: list[str | int], msg: str, type_: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": loc, "msg": msg, "type": type_}]}, headers=headers)


ERROR_DESCRIPTIONS = {
    401: "Нет токена организатора или он не распознан.",
    403: "Учётная запись известна, но её роли это действие не разрешено.",
    404: "Заявка или билет не найдены (или принадлежат другому организатору).",
    409: "Конфликт: заявка в другом состоянии, уже есть открытая заявка, или заявку одновременно изменил другой запрос. "
         "Ничего не записано; запрос можно повторить.",
    422: "Неверные данные: ошибка по каждому полю, сообщения на русском.",
    503: "База данных недоступна. Ничего не записано; повторите запрос через Retry-After секунд.",
}
_RETRY_AFTER_HEADER = {"Retry-After": {"description": "Через сколько секунд повторить запрос.", "schema": {"type": "integer"}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an endpoint: each status code it can answer, with the error model."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]}
        if code == 503:
            out[code]["headers"] = _RETRY_AFTER_HEADER
    return out


# --- handlers ------------------------------------------------------------------------------------

DATABASE_UNAVAILABLE = "База данных временно недоступна. Ничего не записано, повторите запрос позже."
CONCURRENT_WRITE = "Заявку одновременно изменил другой запрос. Ничего не записано, повторите запрос."
VALUE_REFUSED = "Значение вне допустимого диапазона или содержит недопустимые символы."

_HTTP_RU = {404: "Не найдено.", 405: "Метод не поддерживается.", 401: "Нужна авторизация.", 403: "Доступ запрещён."}


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    trouble = db_trouble(exc)
    if trouble == "unavailable":
        # One line per request while it lasts, not a traceback each.
        log.warning("database unavailable: %s: %s", exc.__class__.__name__, (str(getattr(exc, "orig", exc)).strip().splitlines() or [""])[0])
        return error_response(503, ["database"], DATABASE_UNAVAILABLE, "database_unavailable", {"Retry-After": str(RETRY_AFTER_S)})
    if trouble == "conflict":
        return error_response(409, [], CONCURRENT_WRITE, "conflict")
    if trouble == "invalid":
        return error_response(422, [], VALUE_REFUSED, "value_refused")
    log.exception("unexpected database error", exc_info=exc)
    return error_response(500, [], "Внутренняя ошибка сервера.", "internal")


async def _state_conflict(_: Request, exc: Exception) -> JSONResponse:
    # A step read the claim, another request moved it first: nothing of this request was written.
    return error_response(409, [], CONCURRENT_WRITE, "conflict")


async def _guard_refused(_: Request, exc: TransitionRefused) -> JSONResponse:
    # A step the claim's rules refuse (documents after their window, a scanned ticket): the rule's own words.
    code, message = exc.refusals[0] if exc.refusals else ("refused", "Шаг для заявки сейчас невозможен.")
    return error_response(409, ["path", "claim_id"], message, code)


async def _claim_gone(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, ["path", "claim_id"], "Заявка не найдена.", "not_found")


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, list):
        content = {"detail": exc.detail}
    else:
        content = {"detail": [{"loc": [], "msg": _HTTP_RU.get(exc.status_code, str(exc.detail)), "type": "http_error"}]}
    return JSONResponse(status_code=exc.status_code, content=content, headers=getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # A bug of ours: still JSON in the one error shape (the server logs the traceback).
    return error_response(500, [], "Внутренняя ошибка сервера.", "internal")


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RejectControlCharacters)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(OverflowError, _database_error)  # sqlite3: an integer beyond 64 bits
    app.add_exception_handler(ConflictError, _state_conflict)
    app.add_exception_handler(InvalidTrigger, _state_conflict)
    app.add_exception_handler(TransitionRefused, _guard_refused)
    app.add_exception_handler(ClaimNotFound, _claim_gone)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


# --- OpenAPI: every operation documents the errors any endpoint of this API can answer -------------

_WRITE_METHODS = {"post", "put", "patch", "delete"}


def _with_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill in what an operation can answer whatever its code: 503 (database down) everywhere,
    409 (concurrent write) on writes, 404 on a path id, 422 with parameters or a body, 401 with a token;
    and the error model on every documented 4xx/5xx that names none."""
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for _path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            if method not in _WRITE_METHODS | {"get", "head", "options"}:
                continue
            params = op.get("parameters", [])
            codes = {503}
            if method in _WRITE_METHODS:
                codes.add(409)
            if any(p.get("in") == "path" for p in params):
                codes.add(404)
            if params or "requestBody" in op:
                codes.add(422)
            if any(p.get("in") == "header" and p.get("name", "").lower() == "authorization" for p in params) or op.get("security"):
                codes.add(401)
            responses = op.setdefault("responses", {})
            for code, response in responses.items():
                # An error documented by its description only still has the one error shape.
                if str(code)[0] in "45" and "content" not in response:
                    response["content"] = {"application/json": {"schema": ref}}
            for code in sorted(codes):
                if str(code) not in responses:
                    entry: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"schema": ref}}}
                    if code == 503:
                        entry["headers"] = _RETRY_AFTER_HEADER
                    responses[str(code)] = entry
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema([(ErrorResponse, "serialization")], ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = _with_error_responses(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
