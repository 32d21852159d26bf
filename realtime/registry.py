"""What the domain apps plug into ``realtime`` (which imports no domain app, DESIGN.md).

- **Channel authorizers.** Each app registers the private-channel prefixes it owns
  (``private-fiche-``, ``private-job-``, ``private-audit-``, ...) with a function that raises an
  ``ApplicationError`` when the user may not subscribe to the channel of that object id, and the
  permission keys every authorized subscriber holds in scope for that object (``reads``: the fiche
  channel ``fiches``, the audit channel ``audits``...). An event whose full payload needs another key
  goes to that channel as a notify-only copy (``realtime.events``). The longest matching prefix wins
  (``private-job-automation-run-`` before ``private-job-``). ``private-user-{id}`` (the user's own
  channel, every key) belongs to ``realtime`` itself.
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


ALL_KEYS = "*"  # ``reads`` of a channel whose subscriber may read everything published on it

_channel_authorizers: dict[str, ChannelAuthorizer] = {}
_channel_reads: dict[str, frozenset[str]] = {}
_webhook_sources: dict[str, WebhookSource] = {}


def register_channel_authorizer(prefix: str, authorizer: ChannelAuthorizer, *, reads: tuple[str, ...] = ()) -> None:
    """``authorizer(user, object_id)`` raises an ``ApplicationError`` to deny ``prefix + object_id``;
    ``reads``: the permission keys it guarantees (read grant, object in scope)."""
    if not prefix.startswith("private-") or not prefix.endswith("-"):
        raise ValueError(f"channel prefix must look like 'private-<name>-', got {prefix!r}")
    _channel_authorizers[prefix] = authorizer
    _channel_reads[prefix] = frozenset(reads)


def _prefix_of(channel: str) -> str | None:
    for prefix in sorted(_channel_authorizers, key=len, reverse=True):
        if channel.startswith(prefix) and len(channel) > len(prefix):
            return prefix
    return None


def channel_authorizer_for(channel: str) -> tuple[str, ChannelAuthorizer] | None:
    """The authorizer of the longest registered prefix of ``channel`` and the object id after it."""
    prefix = _prefix_of(channel)
    if prefix is None:
        return None
    return channel[len(prefix) :], _channel_authorizers[prefix]


def channel_reads(channel: str, reader: str | None) -> bool:
    """Whether every subscriber authorized on ``channel`` may read an event whose full payload needs
    ``reader`` (None: anyone). Unknown channels and the global channel guarantee nothing."""
    if reader is None:
        return True
    prefix = _prefix_of(channel)
    reads = _channel_reads.get(prefix, frozenset()) if prefix else frozenset()
    return ALL_KEYS in reads or reader in reads


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
