"""``FastJSONField`` (orjson): the same values as Django's ``JSONField`` through Postgres, both ways."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.db import connection

from core.fields import FastJSONField, _dumps
from fiches.models import FicheCache, Recording
from transcriptions.models import Transcription

pytestmark = pytest.mark.django_db

WORDS = [
    {"text": "Bonjour", "start": 0.0, "end": 0.48, "type": "word", "speaker_id": "speaker_0", "logprob": -0.1},
    {"text": " ", "start": 0.48, "end": 0.5, "type": "spacing", "speaker_id": None, "logprob": None},
    {"text": "rétractation «quatorze» jours — 14 €", "start": 1e-3, "end": 12345.678901, "type": "word"},
    {"text": 'guillemets "doubles" \\ et \u2028 séparateur', "start": 2, "end": 3, "type": "audio_event"},
]


def _transcription(words: object) -> Transcription:
    fiche = FicheCache.objects.create(fiche_id="F-json", groupe="G1", sales_date=datetime(2026, 2, 2).date())
    recording = Recording.objects.create(
        call_id="C-json", fiche=fiche, started_at=datetime(2026, 2, 2, 9, tzinfo=UTC), direction="outbound"
    )
    return Transcription.objects.create(recording=recording, fiche=fiche, call_id="C-json", words=words)


def test_words_round_trip_and_are_the_json_postgres_holds():
    row = _transcription(WORDS)
    assert Transcription.objects.get(pk=row.pk).words == WORDS
    with connection.cursor() as cursor:  # stored as real jsonb, the same document the standard encoder gives
        cursor.execute("SELECT words::text FROM transcriptions WHERE id = %s", [row.pk])
        assert json.loads(cursor.fetchone()[0]) == WORDS
    # JSON lookups and key transforms work on it like on any JSONField
    assert Transcription.objects.filter(words__0__text="Bonjour").count() == 1
    assert Transcription.objects.filter(words__contains=[{"type": "audio_event"}]).count() == 1
    assert list(Transcription.objects.values_list("words__2__end", flat=True)) == [12345.678901]


def test_update_and_empty_values():
    row = _transcription([])
    assert Transcription.objects.get(pk=row.pk).words == []
    Transcription.objects.filter(pk=row.pk).update(words=WORDS[:1])
    assert Transcription.objects.get(pk=row.pk).words == WORDS[:1]


def test_values_orjson_refuses_fall_back_to_the_standard_encoder():
    assert json.loads(_dumps({1: "non-string key"})) == {"1": "non-string key"}
    assert json.loads(_dumps([2**70])) == [2**70]
    assert _dumps({"a": [1.5, None, True]}) == b'{"a":[1.5,null,true]}'


def test_no_custom_encoder_or_decoder():
    with pytest.raises(TypeError):
        FastJSONField(encoder=json.JSONEncoder)
