"""judge_compliance: judge every call of a turns CSV against a versioned compliance policy.

The image's entrypoint (`python3 -m judge_compliance`), one module per job:

- `policy`: the YAML policy, parsed and validated into frozen rules.
- `calls`: the turns CSV grouped into calls.
- `rules`: the deterministic rule judge.
- `redaction`: personal data out of a transcript before it leaves the machine.
- `llm_client`: an OpenAI-compatible chat completions client (retries, backoff).
- `llm_judge`: the LLM judge, concurrent, on redacted calls.
- `judgements`: findings, and the JSON line written per call.
- `cli`: arguments, the outputs, `main(argv) -> int`.
"""

from __future__ import annotations

from .calls import REQUIRED_COLUMNS, Call, Turn, read_calls
from .cli import JUDGES, Outcome, judge_calls, main
from .judgements import FAILED, JUDGED, Finding, Judgement, judgement_record
from .llm_client import LLM_ENV, LlmConfig, LlmEndpointError, LlmRejected, llm_config
from .llm_judge import LlmJudge
from .policy import BUNDLED_POLICY, Policy, PolicyError, load_policy, read_policy
from .redaction import Redactor
from .rules import check_hours, check_phrases, judge_with_rules

__all__ = [
    "BUNDLED_POLICY",
    "FAILED",
    "JUDGED",
    "JUDGES",
    "LLM_ENV",
    "REQUIRED_COLUMNS",
    "Call",
    "Finding",
    "Judgement",
    "LlmConfig",
    "LlmEndpointError",
    "LlmJudge",
    "LlmRejected",
    "Outcome",
    "Policy",
    "PolicyError",
    "Redactor",
    "Turn",
    "check_hours",
    "check_phrases",
    "judge_calls",
    "judge_with_rules",
    "judgement_record",
    "llm_config",
    "load_policy",
    "main",
    "read_calls",
    "read_policy",
]
