"""The sink seam: one send of one delivery, and what came of it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from skit_pipelines.notifications.model import Delivery, Subscription


@dataclass(frozen=True)
class SendResult:
    """What one attempt did. Never holds a secret."""

    outcome: str
    """For people and ListDeliveries: "HTTP 200", "slack: channel_not_found", ..."""
    http_status: int = 0
    """The HTTP status when there was an answer; 0 otherwise."""
    delivered: bool = False
    permanent: bool = False
    """Retrying cannot help (e.g. Slack's channel_not_found): the delivery fails now."""
    retry_after: float | None = None
    """The sink asked to wait this long (Slack's 429 Retry-After), in seconds."""


class Sender(ABC):
    """Sends deliveries of one kind of sink."""

    @abstractmethod
    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        """One attempt; failures are results, not exceptions."""
