"""Erasure on request (``privacy.erasure``): a prospect's data erased everywhere we hold it, found by phone (any
written form), e-mail or fiche id; verified by a database-wide search of every table and a scan of the test Redis
database. Audit verdicts and scores stay; another prospect's fiche is untouched; a second request changes nothing;
a dry run changes nothing; the CRM refresh paths keep an erased fiche erased; the admin action needs users.write."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import User
from audits.models import (
    Audit,
    AuditStepResult,
    Citation,
    ControlPointResult,
    Dispute,
    HumanReview,
    RerunEvent,
)
from audits.services.steps import _claimed
from chat.models import ChatConversation, ChatMessage
from fiches.models import FicheCache, FicheCacheDetails, FicheCacheMailDevis, Recording, WorkflowLog
from fiches.selectors import fiche_payload, fiches_for_range_json
from fiches.services.cache import cache_fiche_sales_summaries, fiche_details_persist
from privacy.erasure import COUNT_KINDS, InvalidSubject, TooManyFiches, erase, parse_subject
from privacy.models import ErasureRequest
from realtime.models import WebhookDelivery, WebhookDeliveryAttempt
from tests.audits.conftest import config, sent  # noqa: F401 (the audits tests' fixtures, shared)
from transcriptions.models import Transcription, TranscriptionRun
from transcriptions.selectors import timeline_for

pytestmark = pytest.mark.django_db

DAY = date(2026, 2, 2)
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Prospect:
    nom: str
    prenom: str
    phone: str  # as the CRM holds it
    email: str
    adresse: str
    street: str
    dob: str

    @property
    def forms(self) -> list[str]:
        """What a database-wide search looks for: names, the phone in its written forms, e-mail, street, birth."""
        digits = self.phone[1:]
        spaced = " ".join(digits[i : i + 2] for i in range(1, len(digits), 2))
        return [
            self.nom,
            self.prenom,
            self.phone,
            "33" + digits,
            "+33" + digits,
            " ".join(self.phone[i : i + 2] for i in range(0, 10, 2)),
            f"+33 {digits[0]} {spaced}",
            self.email,
            self.street,
            self.dob,
        ]


SOLENNE = Prospect(
    "Kerbrat",
    "Solenne",
    "0612345678",
    "solenne.kerbrat@exemple.fr",
    "17 rue des Capucins",
    "rue des Capucins",
    "1986-04-12",
)
GWENAEL = Prospect(
    "Morvan",
    "Gwenaël",
    "0798765432",
    "g.morvan@exemple.fr",
    "5 allée des Tilleuls",
    "allée des Tilleuls",
    "1979-11-03",
)


def sale_item(fiche_id: str, p: Prospect, *, phone: str | None = None) -> dict[str, Any]:
    """A sales-list item as the CRM client returns it, with its recordings."""
    return {
        "fiche_id": fiche_id,
        "cle": f"k{fiche_id}",
        "sales_date": DAY.isoformat(),
        "groupe": "Lyon-2",
        "crm_user_id": "u-417",
        "agent_name": "Camille Martin",
        "statut": "Vente validée",
        "produit": "Santé Sérénité",
        "montant_cotisation": 84.5,
        "prospect": {
            "civilite": "Mme",
            "nom": p.nom,
            "prenom": p.prenom,
            "email": p.email,
            "telephone": phone or p.phone,
            "code_postal": "69003",
            "ville": "Lyon",
        },
        "recordings": recordings(fiche_id, p),
    }


def recordings(fiche_id: str, p: Prospect) -> list[dict[str, Any]]:
    return [
        {
            "call_id": f"c-{fiche_id}-{n}",
            "recording_url": f"https://recordings.example/c-{fiche_id}-{n}.mp3",
            "started_at": f"2026-02-02T0{8 + n}:00:00Z",
            "duration_seconds": 300,
            "direction": "outbound",
            "from_number": "0478000000",
            "to_number": p.phone if n == 1 else f"+33{p.phone[1:]}",
            "carrier": "sip-7",
        }
        for n in (1, 2)
    ]


def envelope(fiche_id: str, p: Prospect) -> dict[str, Any]:
    """The CRM's details of the fiche (the gateway contract's shape)."""
    return {
        "success": True,
        "message": "OK",
        "cle": f"k{fiche_id}",
        "fiche": {
            "information": {
                "fiche_id": fiche_id,
                "sales_date": DAY.isoformat(),
                "groupe": "Lyon-2",
                "crm_user_id": "u-417",
                "agent_name": "Camille Martin",
                "statut": "Vente validée",
                "produit": "Santé Sérénité",
                "date_creation": "2026-01-28T10:02:00Z",
            },
            "prospect": {
                "civilite": "Mme",
                "nom": p.nom,
                "prenom": p.prenom,
                "date_naissance": p.dob,
                "email": p.email,
                "telephone": p.phone,
                "adresse": p.adresse,
                "code_postal": "69003",
                "ville": "Lyon",
            },
            "etiquettes": [{"id": "e1", "libelle": "Prioritaire"}],
            "commentaires": [
                {"id": "k1", "auteur": "u-417", "texte": f"Rappeler {p.prenom} au {p.phone} ou {p.forms[6]}"}
            ],
            "mails": [{"id": "m1", "sujet": f"Votre devis {p.prenom} {p.nom}", "destinataire": p.email}],
            "enfants": [{"prenom": "Léo", "date_naissance": "2015-06-02"}],
            "conjoint": {"nom": p.nom, "prenom": "Marc", "date_naissance": "1984-09-30"},
            "raw_sections": {"notes_internes": f"{p.adresse}, digicode 4521"},
            "elements_souscription": {"date_effet": "2026-03-01", "mode_paiement": "prélèvement"},
            "tarification": [{"formule": "Confort", "cotisation_mensuelle": 84.5}],
            "mail_devis": {"sujet": "Votre devis", "html": f"<p>Madame {p.nom}, {p.adresse}</p>"},
            "recordings": recordings(fiche_id, p),
        },
    }


def spoken(text: str) -> list[dict[str, Any]]:
    """Word timings of ``text`` said by the client (``speaker_1``)."""
    words = []
    for n, token in enumerate(text.split()):
        words.append({"text": token, "start": n * 0.5, "end": n * 0.5 + 0.4, "type": "word", "speaker_id": "speaker_1"})
    return words


def transcript(p: Prospect) -> str:
    said = " ".join(p.phone[i : i + 2] for i in range(0, 10, 2))
    return (
        f"Oui bonjour c'est {p.prenom} {p.nom} mon numéro c'est le {said} et mon mail {p.email} j'habite au {p.adresse}"
    )


def make_sale(fiche_id: str, p: Prospect, config, *, user: User) -> FicheCache:  # noqa: F811
    """A fiche cached through the CRM paths (sales list, then details), a transcribed call, a completed audit
    quoting the person, reviews, a dispute, a rerun, chats about the fiche and its audit, a webhook delivery and
    workflow logs naming the fiche, its timeline cached in Redis."""
    cache_fiche_sales_summaries([sale_item(fiche_id, p)], revalidated_at=T0)
    fiche = fiche_details_persist(envelope=envelope(fiche_id, p), fetched_at=T0)
    recording = Recording.objects.get(call_id=f"c-{fiche_id}-1")
    Transcription.objects.create(
        recording=recording,
        fiche=fiche,
        call_id=recording.call_id,
        status="completed",
        text=transcript(p),
        words=spoken(transcript(p)),
        speaker_map={"speaker_0": "agent", "speaker_1": "client"},
        transcribed_at=T0,
    )
    audit = Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=config.current_version,
        status="completed",
        overall_score=80,
        max_score=100,
        score_percentage=80,
        niveau="BON",
        is_compliant=True,
        completed_at=T0,
    )
    quote = f"c'est {p.prenom} {p.nom} mon numéro c'est le {p.phone}"
    born = f"{date.fromisoformat(p.dob):%d/%m/%Y}"
    for definition in config.current_version.steps.all()[:2]:
        step = AuditStepResult.objects.create(
            audit=audit,
            step=definition,
            position=definition.position,
            status="completed",
            score=definition.weight,
            max_score=definition.weight,
            conforme=True,
            raw_result={
                "control_points": [
                    {
                        "index": 0,
                        "status": "pass",
                        "quotes": [{"text": quote, "speaker": "client"}],
                        "rationale": f"Mme {p.nom} donne son numéro {p.phone} et son mail {p.email}.",
                    }
                ]
            },
        )
        point = ControlPointResult.objects.create(
            step_result=step,
            index=0,
            ai_status="pass",
            status="pass",
            rationale=f"La cliente {p.prenom} {p.nom} (née le {born}) confirme au {p.forms[5]}.",
        )
        Citation.objects.create(control_point=point, quote=quote, text=quote, speaker="client", verified=True)
    HumanReview.objects.create(
        step_result=step,
        control_point_index=0,
        status="pass",
        comment=f"OK, Mme {p.nom} confirme bien",
        ai_status="pass",
        previous_status="pass",
    )
    Dispute.objects.create(
        audit=audit,
        step_result=step,
        step_position=step.position,
        control_point_index=0,
        status="rejected",
        comment=f"{p.prenom} a dit oui",
        proposed_status="pass",
        verdict_before="pass",
        resolution_comment=f"voir l'appel au {p.phone}",
    )
    RerunEvent.objects.create(
        audit=audit,
        step_result=step,
        position=step.position,
        status="completed",
        instructions=f"La cliente s'appelle {p.prenom} {p.nom}",
    )
    for entity_type, entity_id in (("fiche", fiche_id), ("audit", str(audit.pk))):
        conversation = ChatConversation.objects.create(user=user, entity_type=entity_type, entity_id=entity_id)
        ChatMessage.objects.create(conversation=conversation, role="user", content=f"Que dit {p.nom} ?")
        ChatMessage.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"{p.prenom} donne le {p.phone}.",
            citations={"citations": [{"quote": quote}]},
        )
    delivery = WebhookDelivery.objects.create(
        source="automation_run",
        source_id=f"run-{fiche_id}",
        event="automation.run.completed",
        url="https://hooks.example/in",
        payload=json.dumps(
            {"type": "automation.run.completed", "timestamp": "2026-02-02T10:00:00Z", "data": {"fiche_id": fiche_id}}
        ),
    )
    WebhookDeliveryAttempt.objects.create(
        delivery=delivery, number=1, started_at=T0, response_status=200, response_body=f"got {fiche_id} {p.nom}"
    )
    WorkflowLog.objects.create(event="fiche_fetched", data={"fiche_id": fiche_id, "ok": True})
    timeline_for(fiche)
    return FicheCache.objects.get(pk=fiche.pk)


@pytest.fixture
def user(make_role, make_user) -> User:
    return make_user(make_role("reader", fiches=("r", "ALL")))


@pytest.fixture
def sales(config, user, settings):  # noqa: F811
    """Solenne's sale (details, audit, chats...), a second sale of hers known from the sales list only (her
    phone written with dots), Gwenaël's sale; a rendered range page in Redis."""
    settings.RANGE_RESPONSE_CACHE_SECONDS = 600
    hers = make_sale("3141592", SOLENNE, config, user=user)
    cache_fiche_sales_summaries([sale_item("3141593", SOLENNE, phone="06.12.34.56.78")], revalidated_at=T0)
    his = make_sale("2718281", GWENAEL, config, user=user)
    fiches_for_range_json(user, DAY, DAY)
    return {"hers": hers, "list_only": FicheCache.objects.get(fiche_id="3141593"), "his": his}


def database_hits(values: list[str]) -> dict[str, list[str]]:
    """Value → the tables where some row's text holds it (case-insensitive), over every table of the database."""
    hits: dict[str, list[str]] = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            for value in values:
                cursor.execute(f'SELECT count(*) FROM "{table}" WHERE "{table}"::text ILIKE %s', [f"%{value}%"])
                if cursor.fetchone()[0]:
                    hits.setdefault(value, []).append(table)
    return hits


def redis_hits(values: list[str]) -> list[str]:
    """Keys of the test Redis database whose name or content holds one of ``values``."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    needles = [v.lower().encode() for v in values]
    found = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        if kind == "string":
            blobs = [client.get(key) or b""]
        elif kind == "hash":
            blobs = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            blobs = client.lrange(key, 0, -1)
        elif kind == "set":
            blobs = list(client.smembers(key))
        elif kind == "zset":
            blobs = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            blobs = []
        text = b"\n".join([key, *blobs]).lower()
        if any(n in text for n in needles):
            found.append(key.decode())
    client.close()
    return found


def verdicts(fiche: FicheCache) -> list[tuple]:
    audits = list(
        Audit.objects.filter(fiche=fiche).values_list(
            "status", "overall_score", "max_score", "score_percentage", "niveau", "is_compliant"
        )
    )
    steps = list(
        AuditStepResult.objects.filter(audit__fiche=fiche)
        .order_by("position")
        .values_list("position", "status", "score", "max_score", "conforme")
    )
    points = list(
        ControlPointResult.objects.filter(step_result__audit__fiche=fiche)
        .order_by("step_result__position", "index")
        .values_list("ai_status", "status", "human_status")
    )
    reviews = list(HumanReview.objects.filter(step_result__audit__fiche=fiche).values_list("status", "ai_status"))
    citations = list(
        Citation.objects.filter(control_point__step_result__audit__fiche=fiche).values_list("verified", "speaker")
    )
    return [audits, steps, points, reviews, citations]


def snapshot(fiche: FicheCache) -> dict[str, Any]:
    """Every row of a fiche's data, as values."""
    return {
        "fiche": list(FicheCache.objects.filter(pk=fiche.pk).values()),
        "details": list(FicheCacheDetails.objects.filter(fiche=fiche).values()),
        "mail": list(FicheCacheMailDevis.objects.filter(fiche=fiche).values()),
        "recordings": list(Recording.objects.filter(fiche=fiche).order_by("call_id").values()),
        "transcripts": list(Transcription.objects.filter(fiche=fiche).values_list("text", "words")),
        "points": list(ControlPointResult.objects.filter(step_result__audit__fiche=fiche).values_list("rationale")),
        "citations": list(
            Citation.objects.filter(control_point__step_result__audit__fiche=fiche).values_list("quote", "text")
        ),
        "steps": list(AuditStepResult.objects.filter(audit__fiche=fiche).values_list("raw_result")),
        "chats": ChatMessage.objects.filter(conversation__entity_id=fiche.fiche_id).count(),
        "deliveries": list(WebhookDelivery.objects.filter(source_id=f"run-{fiche.fiche_id}").values_list("payload")),
        "logs": WorkflowLog.objects.filter(data__fiche_id=fiche.fiche_id).count(),
        "verdicts": verdicts(fiche),
    }


def erase_now(django_capture_on_commit_callbacks, *args, **kwargs):
    """``erase`` and what it does after commit (Redis, the entry's completion)."""
    with django_capture_on_commit_callbacks(execute=True):
        return erase(*args, **kwargs)


def test_an_erasure_by_phone_leaves_nothing_of_the_person_findable(
    sales,
    user,
    django_capture_on_commit_callbacks,
    sent,  # noqa: F811
):
    assert set(database_hits(SOLENNE.forms)) == set(SOLENNE.forms)  # everything is there to begin with
    assert any(key.startswith(f"timeline:{sales['hers'].fiche_id}:") for key in redis_hits([SOLENNE.nom]))
    assert any(key.startswith("fiche-range-json:") for key in redis_hits([SOLENNE.nom]))
    theirs, verdicts_before = snapshot(sales["his"]), verdicts(sales["hers"])

    result = erase_now(
        django_capture_on_commit_callbacks,
        "phone",
        "+33 6 12 34 56 78",
        user=user,
        reason=f"Demande écrite de Mme {SOLENNE.nom} ({SOLENNE.email})",
    )

    assert result.fiche_ids == ["3141592", "3141593"]
    assert database_hits(SOLENNE.forms) == {}
    assert redis_hits(SOLENNE.forms) == []
    # The compliance record: verdicts and scores as they were; the quotes blank; the texts scrubbed.
    assert verdicts(sales["hers"]) == verdicts_before
    assert set(
        Citation.objects.filter(control_point__step_result__audit__fiche=sales["hers"]).values_list("quote", "text")
    ) == {("", "")}
    step = AuditStepResult.objects.filter(audit__fiche=sales["hers"]).first()
    assert step.raw_result["control_points"][0]["quotes"] == [{"text": "", "speaker": "client"}]
    assert "[EFFACÉ]" in step.raw_result["control_points"][0]["rationale"]
    point = ControlPointResult.objects.filter(step_result__audit__fiche=sales["hers"]).first()
    assert point.rationale.startswith("La cliente [EFFACÉ] [EFFACÉ]") and "confirme au" in point.rationale
    # The fiche: the sale's columns stay, the person's data goes, marked erased.
    fiche = FicheCache.objects.get(pk=sales["hers"].pk)
    assert fiche.erased_at is not None and fiche.prospect_nom is None and fiche.prospect_prenom is None
    assert (fiche.groupe, fiche.agent_name, fiche.produit, fiche.statut) == (
        "Lyon-2",
        "Camille Martin",
        "Santé Sérénité",
        "Vente validée",
    )
    payload = fiche_payload(fiche, include_mail_devis=True)
    assert list(payload["fiche"]) == ["information", "recordings"]
    assert payload["fiche"]["information"]["fiche_id"] == "3141592"
    assert [r["call_id"] for r in payload["fiche"]["recordings"]] == ["c-3141592-1", "c-3141592-2"]
    assert {(r["from_number"], r["to_number"], r["recording_url"]) for r in payload["fiche"]["recordings"]} == {
        (None, None, None)
    }
    assert fiche.recordings_count == 2 and not Transcription.objects.filter(fiche=fiche).exists()
    assert not ChatConversation.objects.filter(
        entity_id__in=["3141592", str(Audit.objects.get(fiche=fiche).pk)]
    ).exists()
    assert json.loads(WebhookDelivery.objects.get(source_id="run-3141592").payload) == {
        "type": "automation.run.completed",
        "timestamp": "2026-02-02T10:00:00Z",
        "data": {"redacted": True},
    }
    # The other prospect's sale is untouched, and still findable.
    assert snapshot(sales["his"]) == theirs
    assert set(database_hits(GWENAEL.forms)) == set(GWENAEL.forms)
    # The log entry: the digest, never the value; counts per kind.
    entry = ErasureRequest.objects.get()
    assert entry == result.request and entry.completed_at is not None and entry.requested_by == user
    assert entry.subject_kind == "phone" and entry.subject_digest == parse_subject("phone", "0612345678").digest
    assert entry.fiche_ids == ["3141592", "3141593"] and entry.reason.startswith("Demande écrite de Mme [EFFACÉ]")
    assert set(entry.counts) == set(COUNT_KINDS)
    assert entry.counts["fiches"] == 2 and entry.counts["transcriptions"] == 1 and entry.counts["citations"] == 2
    assert entry.counts["chat_conversations"] == 2 and entry.counts["chat_messages"] == 4
    assert entry.counts["timeline_cache_keys"] == 1 and entry.counts["range_cache_keys"] == 1
    assert entry.counts["webhook_deliveries"] == 1 and entry.counts["workflow_logs"] == 1

    # Idempotent: by phone nothing is found any more, by fiche id nothing is left; no error, zero counts.
    again = erase_now(django_capture_on_commit_callbacks, "phone", "06 12 34 56 78")
    assert not again.found and again.changed == 0 and again.request.counts == dict.fromkeys(COUNT_KINDS, 0)
    by_id = erase_now(django_capture_on_commit_callbacks, "fiche", "3141592")
    assert by_id.fiche_ids == ["3141592"] and by_id.changed == 0
    assert ErasureRequest.objects.count() == 3
    assert snapshot(sales["his"]) == theirs


def test_the_crm_refresh_paths_keep_an_erased_fiche_erased(sales, django_capture_on_commit_callbacks, sent):  # noqa: F811
    erase_now(django_capture_on_commit_callbacks, "phone", SOLENNE.phone)
    later = T0 + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):  # the same CRM data again, a new recording, a new status
        sales_list = [sale_item("3141592", SOLENNE) | {"statut": "Vente annulée"}, sale_item("3141593", SOLENNE)]
        cache_fiche_sales_summaries(sales_list, revalidated_at=later)
        details = envelope("3141592", SOLENNE)
        details["fiche"]["information"]["statut"] = "Vente annulée"
        details["fiche"]["recordings"].append(
            {"call_id": "c-3141592-3", "to_number": SOLENNE.phone, "recording_url": "https://r.example/3.mp3"}
        )
        fiche = fiche_details_persist(envelope=details, fetched_at=later)
        list_only = fiche_details_persist(envelope=envelope("3141593", SOLENNE), fetched_at=later)
    assert database_hits(SOLENNE.forms) == {}
    assert fiche.statut == "Vente annulée" and fiche.details_fetched_at == later  # the sale's columns do move
    assert FicheCache.objects.get(fiche_id="3141593").statut == "Vente validée"
    assert fiche.recordings_count == 3 and list_only.recordings_count == 2
    assert list(fiche_payload(fiche, include_mail_devis=True)["fiche"]) == ["information", "recordings"]
    assert not FicheCacheMailDevis.objects.filter(fiche__in=[fiche, list_only]).exists()
    assert fiche.erased_at is not None and list_only.erased_at is not None


def test_a_dry_run_counts_and_changes_nothing(sales, django_capture_on_commit_callbacks):
    before = {key: snapshot(fiche) for key, fiche in sales.items()}
    hits = database_hits(SOLENNE.forms)
    keys = redis_hits(SOLENNE.forms)
    result = erase_now(django_capture_on_commit_callbacks, "email", SOLENNE.email, dry_run=True)
    assert result.request is None and result.dry_run and result.fiche_ids == ["3141592", "3141593"]
    assert (
        result.counts["fiches"] == 2 and result.counts["citations"] == 2 and result.counts["timeline_cache_keys"] == 1
    )
    assert {key: snapshot(fiche) for key, fiche in sales.items()} == before
    assert database_hits(SOLENNE.forms) == hits and redis_hits(SOLENNE.forms) == keys
    assert not ErasureRequest.objects.exists()


def test_an_erasure_by_email_ignores_case_and_spaces(sales, django_capture_on_commit_callbacks):
    result = erase_now(django_capture_on_commit_callbacks, "email", "  Solenne.Kerbrat@EXEMPLE.fr ")
    assert result.fiche_ids == ["3141592", "3141593"]
    assert database_hits(SOLENNE.forms) == {} and redis_hits(SOLENNE.forms) == []
    assert result.request.subject_digest == parse_subject("email", SOLENNE.email).digest


def test_an_erasure_by_fiche_id_erases_that_sale(sales, django_capture_on_commit_callbacks):
    theirs = snapshot(sales["his"])
    result = erase_now(django_capture_on_commit_callbacks, "fiche", "3141592")
    assert result.fiche_ids == ["3141592"]
    hits = database_hits(SOLENNE.forms)
    # Her other sale (sales list only) is another fiche: still there until it is erased too.
    assert set(sum(hits.values(), [])) == {"fiche_cache", "recordings"}
    assert FicheCache.objects.get(fiche_id="3141593").prospect_nom == SOLENNE.nom
    assert snapshot(sales["his"]) == theirs
    unknown = erase_now(django_capture_on_commit_callbacks, "fiche", "999")
    assert not unknown.found and unknown.request.fiche_ids == [] and unknown.changed == 0


def test_a_sale_only_mentioning_the_person_keeps_its_prospect(sales, django_capture_on_commit_callbacks):
    details = FicheCacheDetails.objects.get(fiche=sales["his"])
    details.commentaires = [
        *details.commentaires,
        {"id": "k9", "auteur": "u-1", "texte": f"Sa voisine {SOLENNE.prenom}, 06-12-34-56-78, recommandée"},
    ]
    details.save()
    result = erase_now(django_capture_on_commit_callbacks, "phone", "0033612345678")
    assert result.fiche_ids == ["3141592", "3141593"] and result.mentioning == ["2718281"]
    assert result.counts["fiche_mentions"] == 1 and result.request.fiche_ids == ["3141592", "3141593"]
    his = FicheCacheDetails.objects.get(fiche=sales["his"])
    assert his.commentaires[-1] == {"id": "k9", "auteur": "[EFFACÉ]", "texte": "[EFFACÉ]"}
    assert his.prospect["nom"] == GWENAEL.nom and FicheCache.objects.get(pk=sales["his"].pk).erased_at is None
    assert database_hits(SOLENNE.forms) == {}


def test_work_still_going_on_the_fiche_is_ended_and_fenced(sales, config, django_capture_on_commit_callbacks, sent):  # noqa: F811
    fiche = sales["hers"]
    running = Audit.objects.create(fiche=fiche, config=config, config_version=config.current_version, status="running")
    definition = config.current_version.steps.first()
    AuditStepResult.objects.create(
        audit=running, step=definition, position=definition.position, status="running", claim_token="tok"
    )
    run = TranscriptionRun.objects.create(
        fiche=fiche, status="processing", call_ids=["c-3141592-2"], total_recordings=2
    )
    result = erase_now(django_capture_on_commit_callbacks, "fiche", "3141592")
    assert result.counts["runs_ended"] == 2
    running.refresh_from_db()
    run.refresh_from_db()
    assert running.status == "failed" and "erased" in running.error
    assert not _claimed(str(running.pk), definition.position, "tok").exists()  # a late answer stores nothing
    assert run.is_terminal and not Transcription.objects.filter(fiche=fiche).exists()


def test_bad_subjects_are_refused():
    for kind, value in (("phone", "12"), ("phone", "not a number"), ("email", "nobody@"), ("name", "Kerbrat")):
        with pytest.raises(InvalidSubject):
            parse_subject(kind, value)
    assert parse_subject("phone", "06 12 34 56 78").normalized == "+33612345678"


def test_a_phone_on_too_many_fiches_is_refused(sales):
    with pytest.raises(TooManyFiches):
        erase("phone", SOLENNE.phone, max_fiches=1)
    assert FicheCache.objects.get(pk=sales["hers"].pk).erased_at is None and not ErasureRequest.objects.exists()


def test_the_command(sales, django_capture_on_commit_callbacks):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("erase_personal_data", "--phone", "+33612345678", "--reason", "courrier", stdout=out)
    text = out.getvalue()
    entry = ErasureRequest.objects.get()
    assert text.startswith(f"erasure {entry.pk}: 2 fiche(s): 3141592, 3141593") and "  citations: 2" in text
    assert not any(form.lower() in text.lower() for form in SOLENNE.forms)
    out = io.StringIO()
    call_command("erase_personal_data", "--fiche", "404", "--dry-run", stdout=out)
    assert out.getvalue().startswith("dry run: nothing changed: nothing found for this fiche.")
    with pytest.raises(CommandError, match="Not a valid phone number"):
        call_command("erase_personal_data", "--phone", "123")
    with pytest.raises(CommandError, match="Not a valid e-mail"):
        call_command("erase_personal_data", "--email", "solenne@")
    with pytest.raises(CommandError):
        call_command("erase_personal_data", "--phone", "0612345678", "--email", SOLENNE.email)


# --- The admin ----------------------------------------------------------------------------------------------------


@pytest.fixture
def superuser(db) -> User:
    """Django's superuser, without any role: it may use the admin, not erase."""
    return User.objects.create_superuser(email="ops@example.com", password="ops-pass-2026")


def test_the_admin_action_is_refused_without_the_users_write_grant(sales, superuser, client):
    client.force_login(superuser)
    response = client.post(
        "/admin/fiches/fichecache/",
        {"action": "erase_prospect_data", "_selected_action": [str(sales["hers"].pk)], "confirm": "yes"},
        follow=True,
    )
    assert response.status_code == 200
    assert "needs the users write grant (users.write); nothing was erased" in response.content.decode()
    assert FicheCache.objects.get(pk=sales["hers"].pk).erased_at is None and not ErasureRequest.objects.exists()
    assert client.get("/admin/privacy/erasurerequest/add/").status_code == 403


def test_the_admin_action_erases_after_confirmation(
    sales, superuser, make_role, client, django_capture_on_commit_callbacks
):
    superuser.roles.set([make_role("privacy", users=("rw", "ALL"))])
    client.force_login(superuser)
    selected = {"action": "erase_prospect_data", "_selected_action": [str(sales["hers"].pk)]}
    page = client.post("/admin/fiches/fichecache/", selected)
    assert (
        page.status_code == 200 and "Yes, erase" in page.content.decode() and "fiche 3141592" in page.content.decode()
    )
    assert FicheCache.objects.get(pk=sales["hers"].pk).erased_at is None  # not before the confirmation
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/fiches/fichecache/", {**selected, "confirm": "yes", "reason": "RGPD art. 17"}, follow=True
        )
    assert "Erased the personal data of 1 fiche(s) (0 already erased)" in response.content.decode()
    entry = ErasureRequest.objects.get()
    assert (entry.via, entry.requested_by, entry.fiche_ids, entry.reason) == (
        "admin",
        superuser,
        ["3141592"],
        "RGPD art. 17",
    )
    assert FicheCache.objects.get(pk=sales["hers"].pk).erased_at is not None
    assert client.get(f"/admin/privacy/erasurerequest/{entry.pk}/change/").status_code == 200
    assert client.get("/admin/privacy/purgereport/").status_code == 200


def test_the_erasure_log_erases_by_phone_or_email(
    sales, superuser, make_role, client, django_capture_on_commit_callbacks
):
    superuser.roles.set([make_role("privacy", users=("rw", "ALL"))])
    client.force_login(superuser)
    form = {"subject_kind": "email", "value": SOLENNE.email, "reason": "", "dry_run": "on"}
    page = client.post("/admin/privacy/erasurerequest/add/", form)
    assert page.status_code == 200 and "3141592, 3141593" in page.content.decode()
    assert not ErasureRequest.objects.exists()
    bad = client.post("/admin/privacy/erasurerequest/add/", {**form, "value": "nobody@", "dry_run": ""})
    assert "Not a valid e-mail address." in bad.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/privacy/erasurerequest/add/", {**form, "dry_run": ""})
    entry = ErasureRequest.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{entry.pk}/change/")
    assert database_hits(SOLENNE.forms) == {}


def test_an_erased_sale_is_never_transcribed_audited_rerun_or_discussed_again(
    sales,
    config,  # noqa: F811
    django_capture_on_commit_callbacks,
    settings,
    make_role,
    make_user,
):
    from audits.models import Audit
    from audits.services.request import audit_request
    from audits.services.reviews import rerun_request
    from chat.services import chat_start
    from core.exceptions import DomainRuleError
    from transcriptions.services.runs import transcription_request

    settings.LLM_BASE_URL, settings.LLM_API_KEY = "http://127.0.0.1:9/v1", "sk-unused"
    hers = sales["hers"]
    audit = Audit.objects.filter(fiche=hers).first()
    erase_now(django_capture_on_commit_callbacks, "fiche", hers.fiche_id)
    hers.refresh_from_db()
    chat_user = make_user(make_role("erased-chat", chat=("rw", "ALL"), fiches=("r", "ALL")))
    refusals = [
        lambda: transcription_request(fiche=hers, force=True),
        lambda: audit_request(fiche=hers, config_id=config.pk),
        lambda: rerun_request(audit=audit, position=1),
        lambda: chat_start(user=chat_user, entity_type="fiche", entity_id=hers.fiche_id, message="Et alors ?"),
    ]
    for refuse in refusals:
        with pytest.raises(DomainRuleError) as refused:
            refuse()
        assert refused.value.code == "fiche_erased" and refused.value.status_code == 422
