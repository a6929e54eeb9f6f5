"""Every promotion event, built one way: the gate's decision on a job's version, an approve /
reject / rollback command's outcome, the live guard's verdict, an A/B test that moved the alias.
Consumers (deployers, the ops page, the live guard itself) read them as one kind of fact, so one
function fills them, with the scores of the comparison behind the decision where there is one."""

from __future__ import annotations

from schemas.events import PromotionData, PromotionDecision, PromotionEvent


def promotion_event(
    prompt: str,
    decision: PromotionDecision,
    reason: str,
    *,
    source: str,
    event_id: str | None = None,
    from_version: int | None = None,
    to_version: int | None = None,
    baseline_score: float | None = None,
    candidate_score: float | None = None,
    improvement: float | None = None,
    ci_low: float | None = None,
    ci_high: float | None = None,
    n_eval: int | None = None,
    request_id: str | None = None,
) -> PromotionEvent:
    """The `gepa.promotion.v1` event of one decision on `prompt` (a fresh id unless `event_id`:
    every decision the daemon announces has a deterministic one, see `schemas/event_ids.py`)."""
    return PromotionEvent.build(
        PromotionData(
            prompt=prompt,
            decision=decision,
            from_version=from_version,
            to_version=to_version,
            baseline_score=baseline_score,
            candidate_score=candidate_score,
            improvement=improvement,
            ci_low=ci_low,
            ci_high=ci_high,
            n_eval=n_eval,
            request_id=request_id,
            reason=reason,
        ),
        id=event_id,
        source=source,
    )
