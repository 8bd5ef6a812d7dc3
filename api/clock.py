"""The one clock seam of the API: routes take `now: Now`; tests override `clock` (app.dependency_overrides)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends


def clock() -> datetime:
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(clock)]
