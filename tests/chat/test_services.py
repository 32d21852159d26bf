"""The chat's building blocks in-process: quotes found in an answer and gated against the timeline,
the long-timeline excerpts, and a stream closed before it started still frees its LLM slot."""

from __future__ import annotations

import pytest

from audits.services.runs import llm_semaphore
from chat import services
from chat.models import ChatMessage
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
