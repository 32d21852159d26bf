"""Pusher private-channel authorization: who may subscribe to which channel."""

from __future__ import annotations

import re

from core.exceptions import ApplicationError, InvalidInput, PermissionDeniedError
from realtime.events import GLOBAL_CHANNEL, InvalidEvent, validate_channel
from realtime.publisher import pusher_client, pusher_enabled
from realtime.registry import channel_authorizer_for

_SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")


class RealtimeDisabled(ApplicationError):
    status_code = 503
    code = "realtime_disabled"
    default_message = "Realtime notifications are not configured on this server."


def authorize_user_channel(user, user_id: str) -> None:
    """``private-user-{id}``: that user only (what concerns them alone: their batches...)."""
    if str(getattr(user, "pk", "")) != user_id:
        raise PermissionDeniedError("not your channel")


def authorize_channel(user, channel: str) -> None:
    """Raise 403 unless ``user`` may subscribe to ``channel``: the global channel is open to every
    authenticated user; any other private channel is decided by the authorizer its app registered
    (the same rules as that app's HTTP APIs); an unregistered channel is refused."""
    if channel == GLOBAL_CHANNEL:
        return
    found = channel_authorizer_for(channel)
    if found is None:
        raise PermissionDeniedError(
            f"Not allowed to subscribe to {channel}: unknown channel.", details={"channel": channel}
        )
    object_id, authorizer = found
    try:
        authorizer(user, object_id)
    except ApplicationError as exc:
        raise PermissionDeniedError(
            f"Not allowed to subscribe to {channel}: {exc.message}", details={"channel": channel}
        ) from None


def pusher_auth(*, user, socket_id: str, channel_name: str) -> dict:
    """``{"auth": "<key>:<hex HMAC-SHA256(secret, 'socket_id:channel')>"}`` from Pusher's own library."""
    if not _SOCKET_ID.match(socket_id or ""):
        raise InvalidInput("Malformed socket_id (expected digits.digits).", details={"socket_id": socket_id})
    try:
        validate_channel(channel_name)
    except InvalidEvent as exc:
        raise InvalidInput(f"Malformed channel_name: {exc}.", details={"channel_name": channel_name}) from None
    if not channel_name.startswith("private-"):
        raise InvalidInput("Only private channels are authorized here.", details={"channel_name": channel_name})
    if not pusher_enabled():
        raise RealtimeDisabled()
    authorize_channel(user, channel_name)
    return pusher_client().authenticate(channel=channel_name, socket_id=socket_id)
