"""Pusher private-channel authorization: who may subscribe to which channel."""

from __future__ import annotations

import re

from accounts.grants import has_grant
from accounts.permissions import can_access
from config.exceptions import ApplicationError, InvalidInput, PermissionDeniedError
from realtime.events import GLOBAL_CHANNEL, InvalidEvent, validate_channel
from realtime.publisher import pusher_client, pusher_enabled

_SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")
_FAMILIES = (
    ("automation-run", re.compile(r"\Aprivate-job-automation-run-(?P<id>.+)\Z")),
    ("job", re.compile(r"\Aprivate-job-(?P<id>.+)\Z")),
    ("fiche", re.compile(r"\Aprivate-fiche-(?P<id>.+)\Z")),
    ("audit", re.compile(r"\Aprivate-audit-(?P<id>.+)\Z")),
)


class RealtimeDisabled(ApplicationError):
    status_code = 503
    code = "realtime_disabled"
    default_message = "Realtime notifications are not configured on this server."


def _deny(channel: str, reason: str) -> PermissionDeniedError:
    return PermissionDeniedError(f"Not allowed to subscribe to {channel}: {reason}.", details={"channel": channel})


def authorize_channel(user, channel: str) -> None:
    """Raise 403 unless ``user`` may subscribe to ``channel`` (same rules as the HTTP APIs)."""
    if channel == GLOBAL_CHANNEL:
        return
    for family, pattern in _FAMILIES:
        match = pattern.match(channel)
        if match is None:
            continue
        object_id = match["id"]
        if family == "automation-run":
            if not has_grant(user, "automation", "read"):
                raise _deny(channel, "missing automation.read")
            return
        if family == "job":
            from fiches.selectors import job_for_user

            if not has_grant(user, "fiches", "read"):  # the job endpoints need it too
                raise _deny(channel, "missing fiches.read")
            try:
                job_for_user(user, object_id)
            except ApplicationError:
                raise _deny(channel, "not your job") from None
            return
        if family == "fiche":
            from fiches.selectors import fiche_row

            row = fiche_row(object_id)
            if not has_grant(user, "fiches", "read"):
                raise _deny(channel, "missing fiches.read")
            if row is None or not can_access(user, "fiches", row):
                raise _deny(channel, "fiche unknown or outside your scope")
            return
        if family == "audit":
            raise _deny(channel, "audits are not available yet")
    raise _deny(channel, "unknown channel")


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
