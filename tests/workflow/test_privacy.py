"""Personal data in a real workflow (worker processes, the three simulators over HTTP): a client who says an
e-mail, a phone number, a NIR, an IBAN and reads a card number aloud (the speech-to-text simulator's
``pii_call_ids``).

- after transcription and an audit, the card number and its security code are nowhere: not in any table of the
  database, not in Redis, not in the worker's log (redacted at ingestion);
- what the LLM received (the simulator's request log), in prompt mode and in tools mode, holds none of the card
  number, IBAN, NIR, phone or e-mail, while the verdicts and the verified quotes of the compliant call are those
  of the same audit made without redaction;
- the other kinds stay in the stored transcript: a reader with the transcriptions write grant reads them, a
  reader without it gets placeholders on every route that shows the call (status, recording, timeline, audit).
"""

from __future__ import annotations

import re

import pytest
from django.db import connection

from audits.models import Audit, Citation
from core.redis import get_redis
from privacy.redaction import PLACEHOLDERS, Kind
from tests.workflow.test_audits import (
    COMPLIANT,
    audit_ended,
    client_for,
    detail,
    run_audit,
    verdicts,
)
from transcriptions.simulator.script import truth_for

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

CALL_ID = f"c-{COMPLIANT}-1"


@pytest.fixture
def auditor(make_role, make_user):
    """Audits and fiches of every group; transcriptions read-only: reads the calls with placeholders."""
    role = make_role("priv-auditor", audits=("rw", "ALL"), fiches=("r", "ALL"), transcriptions=("r", "ALL"))
    return make_user(role, email="priv-auditor@example.com")


@pytest.fixture
def call_manager(make_role, make_user):
    """Manages the calls (transcriptions write): reads them in clear."""
    role = make_role("priv-manager", audits=("r", "ALL"), fiches=("r", "ALL"), transcriptions=("rw", "ALL"))
    return make_user(role, email="priv-manager@example.com")


def said() -> dict[str, str]:
    return truth_for(CALL_ID, seed=42, crm_seed=42, pii=True)["personal_data"]


def forms(value: str) -> list[str]:
    """Ways a number may have been written: whole, and in groups of 4 and 2 as read."""
    return [value, " ".join(value[i : i + 4] for i in range(0, len(value), 4))]


def database_holds(needle: str) -> list[str]:
    """The tables where some row's text holds ``needle`` (case-insensitive), every column included."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text ILIKE %s', [f"%{needle}%"])
            if cursor.fetchone()[0]:
                found.append(table)
    return found


def redis_holds(needle: str) -> list[str]:
    """The keys of the test Redis database whose name or value holds ``needle``."""
    client = get_redis()
    found = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        elif kind == "stream":
            values = [str(entry) for entry in client.xrange(key)]
        else:
            values = []
        text = " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in [key, *values])
        if needle.lower() in text.lower():
            found.append(key.decode() if isinstance(key, bytes) else str(key))
    return found


def stored_quotes(audit: Audit) -> dict[tuple[int, int], list[tuple[str, float, str]]]:
    """The verified quotes of each control point as stored: call, start, the transcript's own words."""
    quotes: dict[tuple[int, int], list[tuple[str, float, str]]] = {}
    for c in Citation.objects.filter(control_point__step_result__audit=audit, verified=True).order_by(
        "control_point__step_result__position", "control_point__index", "position"
    ):
        key = (c.control_point.step_result.position, c.control_point.index)
        quotes.setdefault(key, []).append((c.call_id, c.start, c.text))
    return quotes


def llm_requests_text(llm) -> str:
    return "\n".join(
        str(message.get("content") or "") + str(message.get("tool_calls") or "")
        for r in llm.requests()
        if r["path"] == "/v1/chat/completions"
        for message in r["body"]["messages"]
    )


def assert_no_personal_data_sent(llm) -> None:
    sent = llm_requests_text(llm)
    assert sent, "no LLM request was logged"
    digits = re.sub(r"\D", "", sent)
    data = said()
    for kind in ("card_number", "iban", "nir", "phone"):
        value = re.sub(r"\D", "", data[kind])
        assert value not in digits, kind
        assert data[f"{kind.split('_')[0]}_spoken" if kind != "card_number" else "card_spoken"] not in sent, kind
    assert data["email"] not in sent and data["email_spoken"] not in sent
    assert "arobase" not in sent
    for kind in (Kind.EMAIL, Kind.PHONE, Kind.NIR, Kind.IBAN, Kind.CARD):
        assert PLACEHOLDERS[kind] in sent, kind  # the call was there, redacted


def test_a_card_read_aloud_is_nowhere_and_the_llm_never_reads_personal_data(audit_stack, auditor, call_manager):
    crm, stt, llm, pusher, start = audit_stack
    stt.config.update({"pii_call_ids": [CALL_ID]})
    worker = start("priv1")
    data = said()

    prompt_mode = audit_ended(run_audit(auditor, COMPLIANT))
    assert prompt_mode.status == "completed", prompt_mode.error
    assert_no_personal_data_sent(llm)

    # The card number and its security code are stored nowhere: database, Redis, the worker's log.
    card = data["card_number"]
    for needle in [*forms(card), card[:8], card[-8:], data["card_spoken"], f"au dos ? {data['card_cvv']}"]:
        assert database_holds(needle) == [], needle
        assert redis_holds(needle) == [], needle
        assert needle not in worker.log(), needle

    # The other kinds stay in the stored transcript, for the readers who manage the calls.
    clear = client_for(call_manager).get(f"/api/transcriptions/{COMPLIANT}?include_words=true").json()
    text = clear["recordings"][0]["text"]
    assert data["email_spoken"] in text and data["nir_spoken"] in text and data["iban_spoken"] in text
    assert data["card_spoken"] not in text and PLACEHOLDERS[Kind.CARD] in text

    # A reader without the write grant gets placeholders on every route that shows the call.
    reader = client_for(auditor)
    shown = [
        reader.get(f"/api/transcriptions/{COMPLIANT}?include_words=true").content.decode(),
        reader.get(f"/api/transcriptions/{COMPLIANT}/recordings/{CALL_ID}").content.decode(),
        reader.get(f"/api/transcriptions/{COMPLIANT}/timeline").content.decode(),
        reader.get(f"/api/audits/{prompt_mode.pk}").content.decode(),
    ]
    for body in shown:
        assert data["email_spoken"] not in body and data["nir_spoken"] not in body
        assert data["iban_spoken"] not in body and re.sub(r"\D", "", data["phone"]) not in re.sub(r"\D", "", body)
    assert "[EMAIL]" in shown[0] and "[IBAN]" in shown[2]

    # Tools mode: the model searches the transcript; the results it reads are redacted too.
    llm.clear_requests()
    tools_mode = audit_ended(run_audit(auditor, COMPLIANT, useRlm=True))
    assert tools_mode.status == "completed", tools_mode.error
    assert tools_mode.tools_mode
    assert_no_personal_data_sent(llm)


def test_redaction_leaves_the_verdicts_and_quotes_of_a_compliant_call_unchanged(audit_stack, auditor):
    crm, stt, llm, pusher, start = audit_stack
    stt.config.update({"pii_call_ids": [CALL_ID]})
    clear_worker = start("priv-clear", LLM_REDACT_PII="false")
    clear = audit_ended(run_audit(auditor, COMPLIANT))
    assert clear.status == "completed", clear.error
    sent_in_clear = llm_requests_text(llm)
    assert said()["email_spoken"] in sent_in_clear  # the setting was off: the LLM read the call as said
    clear_worker.stop()

    llm.clear_requests()
    start("priv-redacted")  # the default: LLM_REDACT_PII=true
    redacted = audit_ended(run_audit(auditor, COMPLIANT))
    assert redacted.status == "completed", redacted.error
    assert_no_personal_data_sent(llm)

    a, b = detail(auditor, str(clear.pk)), detail(auditor, str(redacted.pk))
    assert (a["niveau"], a["is_compliant"], a["overall_score"]) == (b["niveau"], b["is_compliant"], b["overall_score"])
    assert a["is_compliant"] is True
    assert verdicts(a) == verdicts(b)
    quotes, quotes_redacted = stored_quotes(clear), stored_quotes(redacted)
    assert quotes == quotes_redacted
    assert sum(len(q) for q in quotes.values()) >= 9  # every mandatory statement quoted
    assert Audit.objects.filter(pk__in=[clear.pk, redacted.pk], status="completed").count() == 2
