"""bulk-decision: staff decide many claims from the Prefect UI (a supervisor, in exceptional cases).

Parameters: the claim numbers, the decision (approve / reject / extend), the note (the buyer reads a
refusal's or an extension's reason), a refusal's reason code, and the acting staff login. The login
must be an active supervisor; the audit rows name `staff:supervisor:<login>`. The decided claims'
runs are resumed by the run starter; a markdown artifact lists what was left undecided and why.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow

from tasks.bulk_decisions import BulkRequest, apply_bulk_decision, check_supervisor, publish_bulk_result


@flow(name="bulk-decision", log_prints=True)
def bulk_decision(claim_numbers: list[str], decision: Literal["approve", "reject", "extend"], staff_login: str, note: str = "",
                  reason_code: str | None = None) -> dict:
    now = datetime.now(UTC)
    principal = check_supervisor(staff_login)
    request = BulkRequest(numbers=tuple(n.strip() for n in claim_numbers if n.strip()), decision=decision, note=note, reason_code=reason_code)
    answer = apply_bulk_decision(request, principal, now)
    publish_bulk_result(answer)
    print(f"{answer['decided']} of {answer['requested']} claims decided ({decision}) by {answer['decided_by']}")
    return {k: v for k, v in answer.items() if k != "results"}
