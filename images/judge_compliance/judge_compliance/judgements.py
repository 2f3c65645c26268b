"""What a judge says about a call, and the JSON line the step writes for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .calls import Call
from .policy import Policy

JUDGED = "judged"
FAILED = "failed"
"""A Judgement's status: the call was judged, or its judgement failed (see `error`)."""

EVIDENCE_CHARS = 160
"""The longest evidence kept for a finding."""


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    turn_index: int | None
    evidence: str
    audio_url: str = ""


@dataclass(frozen=True)
class Judgement:
    call: Call
    status: str
    """JUDGED or FAILED."""
    findings: tuple[Finding, ...] = ()
    error: str = ""
    tokens: int = 0

    @property
    def is_breach(self) -> bool:
        return bool(self.findings)


def judgement_record(judgement: Judgement, policy: Policy, judge: str) -> dict[str, Any]:
    """One line of the `judgements` output."""
    call = judgement.call
    started = call.started_at
    return {
        "call_uuid": call.uuid,
        "call_url": call.call_url,
        "audio_url": call.turns[0].audio_url if call.turns else "",
        "flow_uuid": call.flow_uuid,
        "client_uuid": call.client_uuid,
        "reftime": started.isoformat() if started else None,
        "language": call.language,
        "template_id": call.template_id,
        "flow_id": call.flow_id,
        "call_type": call.call_type,
        "turns": len(call.turns),
        "status": judgement.status,
        "is_breach": judgement.is_breach,
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity,
                "turn_index": f.turn_index,
                "evidence": f.evidence,
                "audio_url": f.audio_url,
            }
            for f in judgement.findings
        ],
        "error": judgement.error,
        "tokens": judgement.tokens,
        "judge": judge,
        "policy_version": policy.version,
    }
