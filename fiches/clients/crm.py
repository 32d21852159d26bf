"""HTTP client of the CRM gateway (contract: ../shared/crm-gateway.md). Never touches the ORM.

- One ``requests.Session`` per process (a connection pool), re-created after a fork.
- Typed errors: ``CrmTransientError`` (timeouts, connection errors, 5xx: retry),
  ``CrmPermanentError`` (4xx, a body that breaks the contract: do not retry), ``CrmNotFound``
  (404 on details). Messages never contain the API key.
- Responses are validated and normalized before they leave this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import orjson
import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from core.metrics import record_outbound

logger = logging.getLogger("fiches.crm")

CONNECT_TIMEOUT_SECONDS = 5


class CrmError(Exception):
    """Base of CRM client errors. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(_scrub(message))
        self.status = status


class CrmTransientError(CrmError):
    """Timeouts, connection errors and 5xx: worth retrying."""


class CrmPermanentError(CrmError):
    """4xx or a response that breaks the contract: retrying will not help."""


class CrmNotFound(CrmPermanentError):
    """The fiche does not exist in the CRM (404 on details)."""


def _scrub(message: str) -> str:
    key = getattr(settings, "CRM_API_KEY", "")
    return message.replace(key, "***") if key else message


# --- Transport ----------------------------------------------------------------------------

_local = threading.local()


def _session() -> requests.Session:
    """The process's session (one pool per process and thread; a forked worker makes its own).

    The environment's proxies and CA bundle are read once, here: with ``trust_env`` requests would
    read the environment (and ``~/.netrc``) again at every call, a large share of a small call's cost.
    """
    session = getattr(_local, "session", None)
    if session is None or getattr(_local, "pid", None) != os.getpid():
        session = requests.Session()
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(settings.CRM_BASE_URL or "http://localhost"))
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session, _local.pid = session, os.getpid()
    return session


def _get(path: str, params: dict[str, str] | None = None) -> Any:
    url = f"{settings.CRM_BASE_URL.rstrip('/')}{path}"
    headers = {"Accept": "application/json"}
    if settings.CRM_API_KEY:
        headers["Authorization"] = f"Bearer {settings.CRM_API_KEY}"
    started = time.perf_counter()
    try:
        response = _session().get(
            url,
            params=params,
            headers=headers,
            timeout=(CONNECT_TIMEOUT_SECONDS, settings.CRM_TIMEOUT_SECONDS),
            allow_redirects=False,
        )
    except requests.Timeout as exc:
        record_outbound("crm", started, status=None, timeout=True)
        raise CrmTransientError(f"CRM timeout on GET {path}: {type(exc).__name__}") from None
    except requests.ConnectionError as exc:
        record_outbound("crm", started, status=None)
        raise CrmTransientError(f"CRM unreachable on GET {path}: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        record_outbound("crm", started, status=None)
        raise CrmTransientError(f"CRM request failed on GET {path}: {type(exc).__name__}") from None

    status = response.status_code
    record_outbound("crm", started, status=status)  # (the body is read by now: not streamed)
    if status >= 500:
        raise CrmTransientError(f"CRM answered {status} on GET {path}: {_error_message(response)}", status=status)
    if status == 404:
        raise CrmNotFound(f"CRM answered 404 on GET {path}: {_error_message(response)}", status=status)
    if status >= 300:
        raise CrmPermanentError(f"CRM answered {status} on GET {path}: {_error_message(response)}", status=status)
    try:
        return orjson.loads(response.content)
    except ValueError:  # (orjson.JSONDecodeError is one)
        raise CrmPermanentError(f"CRM returned a body that is not JSON on GET {path}", status=status) from None


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:200]
    except ValueError:
        pass
    return (response.text or response.reason or "")[:200]


# --- Validation ---------------------------------------------------------------------------


class InvalidSale(Exception):
    """An item that breaks the contract (the message names the field)."""


def _require_str(obj: dict, field: str, where: str) -> str:
    value = obj.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidSale(f"{where}: missing or empty '{field}'")
    return value.strip()


def _optional_str(obj: dict, field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    return str(value)


def _require_date(obj: dict, field: str, where: str) -> str:
    value = _require_str(obj, field, where)
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidSale(f"{where}: '{field}' is not a YYYY-MM-DD date: {value[:40]!r}") from None


def _validate_recordings(items: Any, where: str) -> list[dict]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidSale(f"{where}: 'recordings' is not a list")
    recordings = []
    for i, rec in enumerate(items):
        rec_where = f"{where}.recordings[{i}]"
        if not isinstance(rec, dict):
            raise InvalidSale(f"{rec_where}: not an object")
        started_at = rec.get("started_at")
        if started_at is not None:
            try:
                datetime.fromisoformat(str(started_at))
            except ValueError:
                raise InvalidSale(
                    f"{rec_where}: 'started_at' is not an ISO datetime: {str(started_at)[:40]!r}"
                ) from None
        duration = rec.get("duration_seconds")
        if duration is not None and (not isinstance(duration, (int, float)) or isinstance(duration, bool)):
            raise InvalidSale(f"{rec_where}: 'duration_seconds' is not a number")
        recordings.append({**rec, "call_id": _require_str(rec, "call_id", rec_where)})
    return recordings


def validate_sale(item: Any, where: str) -> dict:
    """One sales-list item, normalized (string ids, ISO date); unknown fields are kept."""
    if not isinstance(item, dict):
        raise InvalidSale(f"{where}: not an object")
    prospect = item.get("prospect") or {}
    if not isinstance(prospect, dict):
        raise InvalidSale(f"{where}: 'prospect' is not an object")
    sale = {
        **item,
        "fiche_id": _require_str(item, "fiche_id", where),
        "sales_date": _require_date(item, "sales_date", where),
        "groupe": _optional_str(item, "groupe"),
        "crm_user_id": _optional_str(item, "crm_user_id"),
        "prospect": prospect,
    }
    if "recordings" in item:
        sale["recordings"] = _validate_recordings(item["recordings"], where)
    return sale


def _permanent(path: str, exc: InvalidSale) -> CrmPermanentError:
    return CrmPermanentError(f"CRM response to GET {path} breaks the contract: {exc}")


# --- Public API ---------------------------------------------------------------------------


def fetch_sales_with_calls(start: date, end: date, *, include_recordings: bool | None = None) -> list[dict]:
    """The validated sales of ``start``..``end`` (inclusive)."""
    if include_recordings is None:
        include_recordings = settings.FICHE_SALES_INCLUDE_RECORDINGS
    path = "/api/fiches/sales-with-calls"
    body = _get(
        path,
        {
            "startDate": start.isoformat(),
            "endDate": end.isoformat(),
            "includeRecordings": "true" if include_recordings else "false",
        },
    )
    try:
        if not isinstance(body, dict) or body.get("success") is False:
            raise InvalidSale("body is not a success object")
        fiches = body.get("fiches")
        if not isinstance(fiches, list):
            raise InvalidSale("'fiches' is missing or not a list")
        sales = [validate_sale(item, f"fiches[{i}]") for i, item in enumerate(fiches)]
    except InvalidSale as exc:
        raise _permanent(path, exc) from None
    logger.info(
        "crm_sales_fetched",
        extra={"start": start.isoformat(), "end": end.isoformat(), "fiches": len(sales)},
    )
    return sales


def fetch_fiche_details(fiche_id: str) -> dict:
    """The validated details envelope ``{"success", "message", "cle", "fiche": {...}}``."""
    fiche_id = str(fiche_id).strip()
    if not fiche_id or "/" in fiche_id:
        raise CrmPermanentError(f"Invalid fiche id {fiche_id[:40]!r}")
    path = f"/api/fiches/by-id/{quote(fiche_id, safe='')}"
    body = _get(path)
    try:
        if not isinstance(body, dict):
            raise InvalidSale("body is not an object")
        if body.get("success") is False:
            raise InvalidSale(f"success=false: {str(body.get('message', ''))[:200]}")
        fiche = body.get("fiche")
        if not isinstance(fiche, dict):
            raise InvalidSale("'fiche' is missing or not an object")
        information = fiche.get("information")
        if not isinstance(information, dict):
            raise InvalidSale("'fiche.information' is missing or not an object")
        information = {
            **information,
            "fiche_id": _require_str(information, "fiche_id", "fiche.information"),
            "sales_date": _require_date(information, "sales_date", "fiche.information"),
        }
        if information["fiche_id"] != fiche_id:
            raise InvalidSale(f"asked for fiche {fiche_id}, got {information['fiche_id']}")
        fiche = {**fiche, "information": information}
        if "recordings" in fiche:
            fiche["recordings"] = _validate_recordings(fiche["recordings"], "fiche")
    except InvalidSale as exc:
        raise _permanent(path, exc) from None
    return {
        "success": True,
        "message": str(body.get("message") or "OK"),
        "cle": _optional_str(body, "cle"),
        "fiche": fiche,
    }
