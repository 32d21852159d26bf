"""The chat's building blocks in-process: quotes found in an answer and gated against the timeline,
the long-timeline excerpts, a stream closed before it started still frees its LLM slot, each part of the
context under its own grant, the per-user stream cap, the audits' reserved LLM slots, and Redis down."""

from __future__ import annotations

import pytest

from chat import services
from chat.exceptions import ChatBusy, ChatSlotsUnavailable, ChatStreamsLimit
from chat.models import ChatMessage
from llm.slots import llm_semaphore
from tests.chat.conftest import CALL, FICHE_ID, RETRACTATION, T0
from tests.support import simulated_call
from transcriptions.selectors import Timeline
from transcriptions.timeline import build_turns, chunk_turns, render_timeline


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    words, speakers = simulated_call(CALL)
    turns = build_turns([{"call_id": CALL, "started_at": T0, "words": words, "speaker_map": speakers}])
    return Timeline(FICHE_ID, turns, chunk_turns(turns), render_timeline(turns), 1)


def test_quotes_are_the_passages_in_guillemets_or_double_quotes_once_each():
    answer = (
        'Il dit « vous avez quatorze jours » puis "aucune signature par téléphone", et “le 1er mars” ; '
        "« vous avez quatorze jours »."
    )
    assert services.extract_quotes(answer) == [
        "vous avez quatorze jours",
        "aucune signature par téléphone",
        "le 1er mars",
    ]
    assert services.extract_quotes("« un « deux » trois »") == ["deux"]
    assert services.extract_quotes("Rien de cité ici.") == []


def test_gate_keeps_quotes_said_in_the_call_and_rejects_the_others(timeline, settings):
    settings.EVIDENCE_MATCH_THRESHOLD = 90
    answer = (
        f"Le conseiller a dit « {RETRACTATION} ». Il aurait ajouté « vous avez trente jours pour changer d'avis » "
        "et « une remise de cinquante pour cent sur la cotisation annuelle », puis « oui »."
    )
    gated = services.gate_quotes(answer, timeline.turns)
    (citation,) = gated["citations"]
    assert citation["call_id"] == CALL and citation["speaker"] == "agent"
    assert citation["text"].startswith("je vous rappelle aussi votre droit de rétractation")
    assert 150 < citation["start"] < citation["end"] < 165
    assert gated["rejected"] == [
        {"text": "vous avez trente jours pour changer d'avis", "reason": "number_mismatch"},
        {"text": "une remise de cinquante pour cent sur la cotisation annuelle", "reason": "not_found"},
        {"text": "oui", "reason": "too_short"},
    ]
    assert services.gate_quotes("Aucune citation.", timeline.turns) == {"citations": [], "rejected": []}


def test_a_long_timeline_is_replaced_by_the_chunks_best_matching_the_question(timeline, monkeypatch):
    full = services.timeline_context(timeline, "rétractation")
    assert full == f"## Appels\n{timeline.text}"

    monkeypatch.setattr(services, "FULL_TIMELINE_MAX_CHARS", 1000)  # the call's timeline is ~3,200 characters
    excerpts = services.timeline_context(timeline, "Le délai de rétractation a-t-il été annoncé ?")
    assert excerpts.startswith("## Appels (extraits)")
    assert "droit de rétractation, vous avez quatorze jours" in excerpts
    assert "Oui allô ?" not in excerpts  # the greeting does not match the question
    assert len(excerpts) < len(timeline.text)
    nothing = services.timeline_context(timeline, "xylophone")
    assert "Aucun passage des appels ne correspond à la question." in nothing


@pytest.mark.django_db
def test_a_stream_closed_before_it_started_frees_its_slot(fiche, chatter, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    stream = services.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Bonjour ?")
    assert len(llm_semaphore().holders()) == 1
    assert list(ChatMessage.objects.values_list("role", "content")) == [("user", "Bonjour ?")]
    stream.close()
    assert llm_semaphore().holders() == []
    assert ChatMessage.objects.count() == 1  # nothing was asked: no assistant message


# --- Nothing through a side door: each part of the context under its own grant ---------------------------------


def _system(stream: services.ChatStream) -> str:
    return stream._messages[0]["content"]


@pytest.mark.django_db
def test_each_part_of_the_context_needs_its_own_grant(audit, make_role, make_user, settings):
    """An audits reader without fiches or transcriptions grants: the audit's results only (the fiche's
    sections and the calls are left out and named as withheld); a fiches reader: the fiche only. The LLM
    request holds nothing the asker could not fetch through the API."""
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    audits_only = make_user(make_role("aud-only", chat=("rw", "ALL"), audits=("r", "ALL")))
    stream = services.chat_start(user=audits_only, entity_type="audit", entity_id=str(audit.pk), message="Niveau ?")
    try:
        system = _system(stream)
        assert "## Résultats de l'audit" in system
        assert "## Fiche" not in system and "Durand" not in system and "Habitation Plus" not in system
        assert "## Appels" not in system and "Oui allô" not in system
        assert "Éléments non communiqués" in system and "la transcription des appels" in system
        assert stream._turns == []  # no transcript to check quotes against: none is shown as a citation
    finally:
        stream.close()

    fiches_only = make_user(make_role("fiche-only", chat=("rw", "ALL"), fiches=("r", "ALL")))
    stream = services.chat_start(user=fiches_only, entity_type="fiche", entity_id=FICHE_ID, message="Produit ?")
    try:
        system = _system(stream)
        assert "## Fiche" in system and "Habitation Plus" in system
        assert "## Appels" not in system and RETRACTATION not in system and "Résultats de l'audit" not in system
    finally:
        stream.close()

    recordings = make_user(make_role("rec", chat=("rw", "ALL"), fiches=("r", "ALL"), recordings=("r", "ALL")))
    stream = services.chat_start(user=recordings, entity_type="fiche", entity_id=FICHE_ID, message="Délai ?")
    try:
        assert "## Appels" in _system(stream) and stream._turns  # recordings.read reads the calls
        assert "Éléments non communiqués" not in _system(stream)
    finally:
        stream.close()

    # A transcript grant in another scope does not count.
    elsewhere = make_user(
        make_role("tx-group", chat=("rw", "ALL"), fiches=("r", "ALL"), transcriptions=("r", "GROUP")),
        groupes=["Paris-1"],
    )
    stream = services.chat_start(user=elsewhere, entity_type="fiche", entity_id=FICHE_ID, message="Délai ?")
    try:
        assert "## Appels" not in _system(stream)
    finally:
        stream.close()
    assert llm_semaphore().holders() == []


@pytest.mark.django_db
def test_a_user_has_at_most_chat_max_streams_per_user_answers_streaming(fiche, chatter, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    settings.CHAT_MAX_STREAMS_PER_USER = 2
    streams = [
        services.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Un ?") for _ in range(2)
    ]
    with pytest.raises(ChatStreamsLimit) as refused:
        services.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Trois ?")
    assert refused.value.status_code == 429 and refused.value.retry_after
    assert len(llm_semaphore().holders()) == 2  # the refused one took nothing
    streams[0].close()
    services.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Encore ?").close()
    streams[1].close()
    assert llm_semaphore().holders() == []


@pytest.mark.django_db
def test_chats_never_take_the_audits_reserved_llm_slots(fiche, make_role, make_user, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    settings.LLM_MAX_CONCURRENCY, settings.LLM_AUDIT_RESERVED_SLOTS = 4, 1
    monkey_wait = services.SLOT_WAIT_SECONDS
    services.SLOT_WAIT_SECONDS = 0.05
    role = make_role("many", chat=("rw", "ALL"), fiches=("r", "ALL"))
    try:
        users = [make_user(role) for _ in range(4)]
        streams = [services.chat_start(user=u, entity_type="fiche", entity_id=FICHE_ID, message="?") for u in users[:3]]
        with pytest.raises(ChatBusy):  # three chats hold three of four LLM slots: the fourth is the audits'
            services.chat_start(user=users[3], entity_type="fiche", entity_id=FICHE_ID, message="?")
        assert llm_semaphore().acquire("audit-step")  # an audit step still gets its reserved slot
        llm_semaphore().release("audit-step")
        for stream in streams:
            stream.close()
    finally:
        services.SLOT_WAIT_SECONDS = monkey_wait
    assert llm_semaphore().holders() == [] and services.chat_llm_semaphore().holders() == []


@pytest.mark.django_db
def test_a_chat_whose_slot_store_is_down_is_a_503(fiche, chatter, settings, api_client):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    api_client.force_authenticate(chatter)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens
    response = api_client.post(f"/api/fiches/{FICHE_ID}/chat", {"message": "Bonjour ?"}, format="json")
    assert response.status_code == 503, response.content  # the rate limiter, in Redis too, answers first
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    with pytest.raises(ChatSlotsUnavailable):  # and the slots, past it
        services.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Bonjour ?")
    assert not ChatMessage.objects.exists()


@pytest.mark.django_db
def test_chat_messages_count_against_the_users_chat_rate(fiche, chatter, settings, api_client):
    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    settings.CHAT_USER_RATE, settings.CHAT_USER_BURST = "1/m", 1
    api_client.force_authenticate(chatter)
    refused = api_client.post("/api/fiches/9999999/chat", {"message": "?"}, format="json")
    assert refused.status_code == 404  # refused requests do not spend the budget
    first = api_client.post(f"/api/fiches/{FICHE_ID}/chat", {"message": "Bonjour ?"}, format="json")
    assert first.status_code == 200  # its stream is never read (its slots expire with the test's Redis)
    second = api_client.post(f"/api/fiches/{FICHE_ID}/chat", {"message": "Encore ?"}, format="json")
    assert second.status_code == 429 and int(second["Retry-After"]) > 0
    assert second.json()["error"]["code"] == "chat_requests_throttled"
    assert ChatMessage.objects.filter(role="user").count() == 1
