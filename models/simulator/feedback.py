"""The units' side of dispatch, simulated: verdicts on the decisions of a replayed stream.

In the 12345 system every order a unit receives is either accepted or sent back as not
theirs (退单), and the centre re-dispatches it. Those verdicts are where live accuracy
comes from. For a simulated stream we know each report's right unit, so we can play the
units: automatic orders to the right unit are accepted, wrong ones returned with the right
unit; and a share of the review queue is handled by a simulated dispatcher, some of it
after the urgency's deadline, so the dashboard's accuracy and response-time compliance
have real verdicts to count. The rest of the queue is left for people on the board.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.records import DispatchFeedback


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """What the simulator needs of a stored decision."""

    input_id: str
    unit: str  # "" when the place did not settle it
    code: str
    auto: bool
    received_at: datetime
    respond_by: datetime
    decided_at: datetime


def units_feedback(
    decisions: Iterable[StoredDecision],
    truth: Mapping[str, Mapping[str, str]],
    *,
    now: datetime,
    seed: int = 7,
    review_share: float = 0.5,
) -> list[DispatchFeedback]:
    """One verdict per automatic decision, and for ``review_share`` of the review queue.

    Ids are derived from the report (``sim-<id>``), so running this twice replaces the
    verdicts instead of adding to them (the feedback table keeps one row per id)."""
    rng = random.Random(seed)
    verdicts = []
    for decision in decisions:
        right = truth.get(decision.input_id)
        if right is None:
            continue
        if decision.auto:
            # Units sign for an order within minutes, or send it back.
            given = decision.decided_at + timedelta(minutes=rng.uniform(1, 20))
            actor = "unit"
        elif rng.random() < review_share:
            # Dispatchers mostly make it, but a queue at rush hour runs late sometimes.
            due = (decision.respond_by - decision.received_at).total_seconds()
            given = decision.received_at + timedelta(seconds=due * rng.uniform(0.05, 1.3))
            actor = "dispatcher-sim"
        else:
            continue
        verdict = "confirmed" if decision.unit == right["unit"] else "corrected"
        verdicts.append(
            DispatchFeedback(
                kind="dispatch_feedback",
                schema_version=1,
                feedback_id=f"sim-{decision.input_id}",
                input_id=decision.input_id,
                verdict=verdict,
                unit=right["unit"],
                code=right.get("code") or None,
                dispatcher_id=actor,
                given_at=min(given, now).isoformat(),  # type: ignore[arg-type]
                auto=decision.auto,
                decided_unit=decision.unit or None,
                received_at=decision.received_at.isoformat(),  # type: ignore[arg-type]
                respond_by=decision.respond_by.isoformat(),  # type: ignore[arg-type]
            )
        )
    return verdicts
