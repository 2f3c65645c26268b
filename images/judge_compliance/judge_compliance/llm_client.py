"""The OpenAI-compatible chat completions client, shared in `skit_components.llm`, and the
LLM judge's configuration from its declared environment."""

from __future__ import annotations

from skit_components import llm
from skit_components.llm import (
    LLM_ENV,
    Aborted,
    ChatClient,
    LlmConfig,
    LlmEndpointError,
    LlmRejected,
    Messages,
    RequestFailed,
    Retryable,
    Unreachable,
)

__all__ = [
    "LLM_ENV",
    "Aborted",
    "ChatClient",
    "LlmConfig",
    "LlmEndpointError",
    "LlmRejected",
    "Messages",
    "RequestFailed",
    "Retryable",
    "Unreachable",
    "llm_config",
]


def llm_config(*, timeout_seconds: float, max_attempts: int, concurrency: int) -> LlmConfig:
    """The LLM judge's configuration from its declared environment variables (LLM_ENV)."""
    return llm.llm_config(
        purpose="judge=llm",
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        concurrency=concurrency,
    )
