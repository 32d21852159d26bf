"""Card numbers and codes stored before they were redacted at ingestion: ``manage.py redact_stored_data``
redacts them in place (transcripts' words and text, chat messages), leaves the other kinds, and is a no-op the
second time; ``--dry-run`` changes nothing."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from chat.models import ChatConversation, ChatMessage
from privacy.redaction import words_text
from tests.chat.conftest import CALL, chatter, fiche  # noqa: F401 (the chat tests' fixtures, shared)
from transcriptions.models import Transcription
from transcriptions.simulator.script import transcript_for, truth_for

CARD = "4970 1012 3456 7893"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("redact_stored_data", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_stored_card_numbers_and_codes_are_redacted_once(fiche, chatter):  # noqa: F811
    body = transcript_for(CALL, seed=42, crm_seed=42, pii=True)
    Transcription.objects.filter(call_id=CALL).update(words=body["words"], text=body["text"])
    said = truth_for(CALL, seed=42, crm_seed=42, pii=True)["personal_data"]
    conversation = ChatConversation.objects.create(user=chatter, entity_type="fiche", entity_id=fiche.fiche_id)
    ChatMessage.objects.create(conversation=conversation, role="user", content=f"Sa carte : {CARD}, ok ?")
    ChatMessage.objects.create(conversation=conversation, role="user", content="Rien à cacher ici.")

    assert re.findall(r"\d+", run("--dry-run")) == ["1", "1"]
    assert said["card_spoken"] in Transcription.objects.get(call_id=CALL).text  # nothing changed

    assert re.findall(r"\d+", run()) == ["1", "1"]
    row = Transcription.objects.get(call_id=CALL)
    for text in (row.text, words_text(row.words)):
        assert said["card_spoken"] not in text and "[CARTE]" in text
        assert said["email_spoken"] in text  # the other kinds stay for the readers allowed to see them
    assert list(ChatMessage.objects.order_by("pk").values_list("content", flat=True)) == [
        "Sa carte : [CARTE], ok ?",
        "Rien à cacher ici.",
    ]
    assert re.findall(r"\d+", run()) == ["0", "0"]
