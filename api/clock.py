"""The one clock seam of the API; tests override this dependency (app.dependency_overrides[clock])."""
from __future__ import annotations

from datetime import UTC, datetime


def clock() -> datetime:
    return datetime.now(UTC)
