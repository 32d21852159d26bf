"""What the domain apps plug into ``realtime`` (which imports no domain app, DESIGN.md).

- **Channel authorizers.** Each app registers the private-channel prefixes it owns
  (``private-fiche-``, ``private-job-``, ``private-audit-``, ...) with a function that raises an
  ``ApplicationError`` when the user may not subscribe to the channel of that object id. The longest
  matching prefix wins (``private-job-automation-run-`` before ``private-job-``).
- **Webhook sources.** An app that sends webhooks registers a source name with two optional hooks:
  ``authorize(user, source_id)`` (may this user manage, e.g. redeliver, the source's deliveries? raise
  an ``ApplicationError`` if not) and ``on_attempt(source_id, attempt)`` (told of every attempt, e.g.
  to keep counters on the job or stop its webhooks on 410).

Apps register in their ``AppConfig.ready``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ChannelAuthorizer = Callable[[Any, str], None]


@dataclass(frozen=True)
class AttemptReport:
    """What a webhook source hears after each attempt of one of its deliveries."""

    delivery_id: int
    event: str
    status_code: int | None
    error: str | None
    started_at: datetime
    delivered: bool

    @property
    def gone(self) -> bool:
        """The receiver answered 410 Gone: it wants no more webhooks."""
        return self.status_code == 410


@dataclass(frozen=True)
class WebhookSource:
    name: str
    authorize: Callable[[Any, str], None] | None = None
    on_attempt: Callable[[str, AttemptReport], None] | None = None


_channel_authorizers: dict[str, ChannelAuthorizer] = {}
_webhook_sources: dict[str, WebhookSource] = {}


def register_channel_authorizer(prefix: str, authorizer: ChannelAuthorizer) -> None:
    """``authorizer(user, object_id)`` raises an ``ApplicationError`` to deny ``prefix + object_id``."""
    if not prefix.startswith("private-") or not prefix.endswith("-"):
        raise ValueError(f"channel prefix must look like 'private-<name>-', got {prefix!r}")
    _channel_authorizers[prefix] = authorizer


def channel_authorizer_for(channel: str) -> tuple[str, ChannelAuthorizer] | None:
    """The authorizer of the longest registered prefix of ``channel`` and the object id after it."""
    for prefix in sorted(_channel_authorizers, key=len, reverse=True):
        if channel.startswith(prefix) and len(channel) > len(prefix):
            return channel[len(prefix) :], _channel_authorizers[prefix]
    return None


def registered_channel_prefixes() -> list[str]:
    return sorted(_channel_authorizers)


def register_webhook_source(
    name: str,
    *,
    authorize: Callable[[Any, str], None] | None = None,
    on_attempt: Callable[[str, AttemptReport], None] | None = None,
) -> None:
    _webhook_sources[name] = WebhookSource(name=name, authorize=authorize, on_attempt=on_attempt)


def webhook_source(name: str) -> WebhookSource:
    """The registered source (an unregistered one has no hooks: nobody but staff manages it)."""
    return _webhook_sources.get(name) or WebhookSource(name=name)
