"""SSRF guard for outgoing URLs an outside party supplied: webhook URLs (at request time and again
at send time) and, through ``validate_outgoing_url`` with its own allowlist, the CRM's recording URLs
that the speech-to-text client downloads (``transcriptions.clients.elevenlabs``).

Rules (webhooks):
- ``http``/``https`` only, a host, no credentials in the URL;
- ``WEBHOOK_ALLOWED_ORIGINS`` set (comma-separated ``scheme://host[:port]``): only those origins
  are accepted, and they may be private (trusted internal receivers);
- otherwise every address the host resolves to must be public: loopback, private, link-local,
  CGNAT (100.64/10), multicast, unspecified, reserved, cloud metadata endpoints, IPv6 ULA and
  link-local, and IPv4-mapped/compatible IPv6 forms of those are rejected. Hosts spelled as
  decimal, octal or hex integers (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) are normalized
  the way resolvers read them before the check.

``validate_outgoing_url`` applies the same checks with another allowlist, either exclusive (as
webhooks: only those origins) or as exemptions (those origins are trusted, even when private; any
other host must resolve only to public addresses).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from core.exceptions import InvalidInput

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
METADATA_IPS = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
CGNAT = ipaddress.ip_network("100.64.0.0/10")
DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeWebhookUrl(InvalidInput):
    code = "unsafe_webhook_url"
    default_message = "The webhook URL is not allowed."


class WebhookHostUnresolvable(UnsafeWebhookUrl):
    """The host does not resolve (now). At request time this is a 400 like any unusable URL; at
    send time it is transient (DNS can fail for a moment), unlike a resolved unsafe address."""


@dataclass(frozen=True)
class SafeUrl:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]  # the checked addresses (connect to one of these, not a new lookup)
    allowlisted: bool


def _reject(reason: str, url: str) -> UnsafeWebhookUrl:
    return UnsafeWebhookUrl(f"Unsafe webhook URL: {reason}.", details={"reason": reason, "url": url[:200]})


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host}:{port}"


def allowed_origins(raw_origins: Iterable[str] | None = None) -> frozenset[str]:
    """``raw_origins`` (default: ``WEBHOOK_ALLOWED_ORIGINS``) as ``scheme://host:port`` (unusable entries dropped)."""
    origins = set()
    for raw in settings.WEBHOOK_ALLOWED_ORIGINS if raw_origins is None else raw_origins:
        parts = urlsplit(raw.strip())
        if parts.scheme in DEFAULT_PORTS and parts.hostname:
            origins.add(_origin(parts.scheme, parts.hostname.lower(), parts.port or DEFAULT_PORTS[parts.scheme]))
    return frozenset(origins)


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton-style spellings: decimal (2130706433), hex (0x7f000001), octal (0177.0.0.1),
    and short forms (127.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    values = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                values.append(int(part, 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (5 - len(values)) + last
    return ipaddress.IPv4Address(number) if number < 2**32 else None


def _unsafe_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is None and ip.packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d
            mapped = ipaddress.IPv4Address(ip.packed[12:])
        if mapped is not None:
            reason = _unsafe_reason(mapped)
            return f"IPv4-mapped {reason}" if reason else None
    if ip in METADATA_IPS:
        return "cloud metadata address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_link_local:
        return "link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "carrier-grade NAT address"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_private:
        return "private address"
    if ip.is_reserved or not ip.is_global:
        return "non-public address"
    return None


def _resolve(host: str, port: int) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise _reject(f"host {host!r} is not a valid host name ({exc})", host) from None
    except OSError as exc:  # socket.gaierror: no answer from DNS, now
        reason = f"host {host!r} does not resolve ({exc})"
        raise WebhookHostUnresolvable(
            f"Unsafe webhook URL: {reason}.", details={"reason": reason, "url": host}
        ) from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def validate_webhook_url(url: str) -> SafeUrl:
    """Return the checked URL and addresses, or raise ``UnsafeWebhookUrl`` naming the reason."""
    return validate_outgoing_url(
        url, allowed=allowed_origins(), allowlist_setting="WEBHOOK_ALLOWED_ORIGINS", allowlist_only=True
    )


def validate_outgoing_url(
    url: str, *, allowed: frozenset[str], allowlist_setting: str, allowlist_only: bool
) -> SafeUrl:
    """Return the checked URL and addresses, or raise ``UnsafeWebhookUrl`` naming the reason (in
    ``details["reason"]``, which never holds the URL's query string). ``allowed``: normalized origins
    (``allowed_origins(...)``) trusted even on private addresses; ``allowlist_only``: when ``allowed``
    is not empty, refuse every other origin (named after ``allowlist_setting``)."""
    if not isinstance(url, str) or not url.strip():
        raise _reject("empty URL", str(url))
    url = url.strip()
    if len(url) > 2048:
        raise _reject("URL longer than 2048 characters", url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _reject(f"malformed URL ({exc})", url) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _reject("only http and https URLs are allowed", url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _reject("credentials in the URL are not allowed", url)
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise _reject("the URL has no host", url)
    port = port or DEFAULT_PORTS[scheme]

    if _origin(scheme, host, port) in allowed:
        return SafeUrl(url, scheme, host, port, _resolve(host, port), allowlisted=True)
    if allowed and allowlist_only:
        raise _reject(f"origin {scheme}://{host}:{port} is not in {allowlist_setting}", url)

    if host in METADATA_HOSTS or host.endswith(".internal") or host == "localhost" or host.endswith(".localhost"):
        raise _reject(f"host {host!r} is internal", url)
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = _legacy_ipv4(host)
    if literal is not None:
        reason = _unsafe_reason(literal)
        if reason:
            raise _reject(reason, url)
        return SafeUrl(url, scheme, host, port, (str(literal),), allowlisted=False)
    addresses = _resolve(host, port)
    for address in addresses:
        reason = _unsafe_reason(ipaddress.ip_address(address.split("%")[0]))
        if reason:
            raise _reject(f"host {host!r} resolves to a {reason} ({address})", url)
    return SafeUrl(url, scheme, host, port, addresses, allowlisted=False)
