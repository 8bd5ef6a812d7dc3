"""The operator's systems: the sales feed (`PUT /operator/orders/{order_number}`), with a service key.

The order's JSON shape is tasks.sales.OrderIn (docs/sales-feed.md). The upsert is idempotent:
201 when the order is new, 200 when it was updated or was already as sent ("unchanged").
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import Service
from api.errors import ErrorResponse
from models.db import get_engine
from tasks.sales import OrderIn, upsert_orders

router = APIRouter(prefix="/operator", tags=["operator"])


def clock() -> datetime:
    """This router's clock seam; tests override the dependency."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(clock)]

OrderNumber = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
                                  description="The operator's order number", examples=["K-1000001"])]


class OrderUpserted(BaseModel):
    order_number: str
    result: str = Field(description="created | updated | unchanged")
    changed: list[str] = Field(default_factory=list, description="What changed, e.g. event.status, tickets[BC1].status")
    claims_refused: list[str] = Field(default_factory=list, description="Claims refused because a barcode was scanned")
    claims_closed: list[str] = Field(default_factory=list, description="Claims closed because the ticket was refunded elsewhere")


def _error(status: int, loc: list[Any], msg: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": loc, "msg": msg, "type": kind}]})


@router.put(
    "/orders/{order_number}",
    response_model=OrderUpserted,
    responses={201: {"model": OrderUpserted, "description": "The order is new"}, 401: {"model": ErrorResponse},
               403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def put_order(order_number: OrderNumber, body: OrderIn, principal: Service, now: Now) -> JSONResponse:
    """Create or update one order with its organizer, venue, event and tickets (the operator's sales system).

    A barcode reported `scanned` refuses the ticket's open claim; a ticket or order reported `refunded`
    voids the barcode and closes the claim. A void ticket is never made valid again (409).
    """
    if body.number != order_number:
        return _error(422, ["body", "number"], "Номер заказа в теле запроса не совпадает с номером в адресе.", "number_mismatch")
    with get_engine().begin() as conn:
        (result,) = upsert_orders(conn, [(None, body)], actor=principal.audit, now=now)
    if result.outcome == "refused":
        return JSONResponse(status_code=409, content={"detail": [{**e, "loc": ["body", *e["loc"]]} for e in result.errors]})
    out = OrderUpserted(order_number=result.number, result=result.outcome, changed=result.changed,
                        claims_refused=result.claims_refused, claims_closed=result.claims_closed)
    return JSONResponse(status_code=201 if result.outcome == "created" else 200, content=out.model_dump())
