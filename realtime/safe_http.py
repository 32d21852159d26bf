"""HTTP to URLs an outside party supplied (webhook receivers, the CRM's recording URLs): one session
factory and one redirect policy for every such call.

- ``hardened_session``: a ``requests-hardened`` session that never follows redirects by itself and,
  unless the origin is allowlisted (a trusted, possibly private, host), connects only to the address
  it resolved and checked, refusing private ones (no second lookup an attacker's DNS could rebind).
  Its connections are registered for ``http_deadline.deadline``, which cuts them at a total deadline.
- ``checked_get``: a streamed GET that follows at most ``max_redirects`` redirects, each
  ``Location`` checked by the same guard as the first URL (``url_safety``), on a session of its own
  (pinned or not, as that hop's check says). A redirect to a private address fails like a URL to one.

The caller wraps the exchange in ``deadline(...)`` (a peer dripping bytes never trips a read timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from urllib.parse import urljoin

import requests
from requests_hardened import Config as HardenedConfig
from requests_hardened import Manager as HardenedManager

from realtime.http_deadline import track_connections
from realtime.url_safety import SafeUrl

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def hardened_session(
    *, allowlisted: bool, timeout: tuple[float, float], user_agent: str | None = None
) -> requests.Session:
    """Trusted allowlisted origins may be private; anything else goes through requests-hardened's IP
    filter, which connects to the address it resolved and checked and rejects private ones.
    Redirects are never followed by the session."""
    config = HardenedConfig(
        ip_filter_enable=not allowlisted,
        ip_filter_allow_loopback_ips=False,
        never_redirect=True,
        default_timeout=timeout,
        user_agent_override=user_agent,
    )
    return track_connections(HardenedManager(config).get_session())


class RedirectRefused(requests.RequestException):
    """Too many redirects, or a redirect without a usable ``Location``. The message names no URL."""


@contextmanager
def checked_get(
    url: str,
    *,
    validate: Callable[[str], SafeUrl],
    max_redirects: int,
    timeout: tuple[float, float],
    headers: Mapping[str, str] | None = None,
    user_agent: str | None = None,
) -> Iterator[requests.Response]:
    """GET ``url`` (streamed) and yield the first answer that is not a redirect; the answer and the
    sessions are closed on exit. Each hop's URL is checked by ``validate`` first: whatever it raises
    (``UnsafeWebhookUrl``...) propagates before anything is sent there. Raises ``RedirectRefused``
    after ``max_redirects`` redirects, and the transport's ``requests`` exceptions (an address the IP
    filter refuses at connect time: ``requests_hardened.ip_filter.InvalidIPAddress``)."""
    with ExitStack() as stack:
        target = url
        for hop in range(max_redirects + 1):
            safe = validate(target)
            session = stack.enter_context(
                hardened_session(allowlisted=safe.allowlisted, timeout=timeout, user_agent=user_agent)
            )
            response = session.get(safe.url, headers=dict(headers or {}), stream=True, allow_redirects=False)
            stack.callback(response.close)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or location is None:
                yield response
                return
            response.close()  # the connection goes back to this hop's pool; nothing of the body is read
            if hop == max_redirects:
                break
            try:
                target = urljoin(safe.url, location.strip())
            except ValueError:
                raise RedirectRefused(f"redirect {hop + 1} has an unusable Location") from None
        raise RedirectRefused(f"more than {max_redirects} redirect(s)")
