"""Personal data in the chat's LLM request (in-process, nothing is sent: the request is read before it
streams): redacted by default (``LLM_REDACT_PII``), always for a reader who does not see personal data in
clear (no transcriptions/recordings write grant), in clear only for a reader who may read it when the setting
is off; a card number typed in a question is neither stored nor sent; the quotes are checked against the same
(redacted) calls the LLM read."""

from __future__ import annotations

import pytest

from chat import services
from chat.models import ChatMessage
from fiches.models import FicheCacheDetails
from tests.chat.conftest import CALL, FICHE_ID
from transcriptions.models import Transcription
from transcriptions.simulator.script import transcript_for, truth_for

PHONE = "0611223344"
CARD_QUESTION = "Le client m'a donné sa carte 4970 1012 3456 7893, je la note où ?"


@pytest.fixture
def said(fiche) -> dict[str, str]:
    """The fiche's call is one where the client says an e-mail, a phone, a NIR, an IBAN and a card number (as
    stored before card numbers were redacted at ingestion), and the CRM gave the prospect's phone and e-mail."""
    Transcription.objects.filter(call_id=CALL).update(
        words=transcript_for(CALL, seed=42, crm_seed=42, pii=True)["words"]
    )
    FicheCacheDetails.objects.filter(fiche=fiche).update(
        prospect={"nom": "Durand", "prenom": "Paul", "telephone": PHONE, "email": "paul.durand@example.fr"}
    )
    return truth_for(CALL, seed=42, crm_seed=42, pii=True)["personal_data"]


@pytest.fixture
def manager(make_role, make_user):
    role = make_role("chat-mgr", chat=("rw", "ALL"), fiches=("r", "ALL"), transcriptions=("rw", "ALL"))
    return make_user(role, email="chat-mgr@example.com")


def request_of(user, message: str = "Qu'a dit le client ?") -> tuple[str, list[dict]]:
    stream = services.chat_start(user=user, entity_type="fiche", entity_id=FICHE_ID, message=message)
    try:
        return "\n".join(m["content"] for m in stream._messages), stream._turns
    finally:
        stream.close()


def assert_nothing_personal(sent: str, said: dict[str, str]) -> None:
    for key in ("email_spoken", "phone_spoken", "nir_spoken", "iban_spoken", "card_spoken"):
        assert said[key] not in sent, key
    assert PHONE not in sent and "paul.durand@example.fr" not in sent
    assert "[EMAIL]" in sent and "[TÉLÉPHONE]" in sent and "[IBAN]" in sent and "[CARTE]" in sent


@pytest.mark.django_db
def test_the_llm_reads_placeholders_by_default(said, manager, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    sent, turns = request_of(manager)
    assert_nothing_personal(sent, said)
    assert any("[EMAIL]" in turn["text"] for turn in turns)  # quotes are gated on the calls the LLM read


@pytest.mark.django_db
def test_with_redaction_off_only_a_reader_of_personal_data_sends_it(said, manager, chatter, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    settings.LLM_REDACT_PII = False
    sent, turns = request_of(manager)
    assert said["email_spoken"] in sent and said["iban_spoken"] in sent and PHONE in sent
    assert any(said["email_spoken"] in turn["text"] for turn in turns)

    # The chatter reads transcriptions without the write grant: the same request holds placeholders.
    sent, turns = request_of(chatter)
    assert_nothing_personal(sent, said)
    assert not any(said["email_spoken"] in turn["text"] for turn in turns)


@pytest.mark.django_db
def test_a_card_number_typed_in_a_question_is_neither_stored_nor_sent(said, manager, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    settings.LLM_REDACT_PII = False
    stream = services.chat_start(user=manager, entity_type="fiche", entity_id=FICHE_ID, message=CARD_QUESTION)
    try:
        asked = stream._messages[-1]["content"]
    finally:
        stream.close()
    assert asked == "Le client m'a donné sa carte [CARTE], je la note où ?"
    assert list(ChatMessage.objects.values_list("content", flat=True)) == [asked]
