"""The realtime contract (../shared/seeds/003): the event catalog, channel routing, required fields,
channel-name validation and payload truncation under Pusher's 10 KB limit."""

from __future__ import annotations

import json
from datetime import date, timedelta

import orjson
import pytest

from realtime.events import (
    EVENTS,
    InvalidEvent,
    channels_for,
    encode_payload,
    validate_channel,
    validate_event,
)
from realtime.publisher import build_messages

A, F, J, G, T, Q = "audit", "fiche", "job", "global", "transcription", "review_queue"
_JOB = (
    "jobId",
    "status",
    "startDate",
    "endDate",
    "progress",
    "completedDays",
    "totalDays",
    "totalFiches",
    "datesCompleted",
    "datesRemaining",
    "datesFailed",
)

# The contract, written out from the document: channel kinds and the non-optional payload fields of
# each event (for audit.step_started / step_completed, the fields both the normal and the rerun
# payloads have).
CONTRACT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "audit.started": (
        (A, F),
        ("audit_id", "fiche_id", "audit_config_id", "audit_config_name", "total_steps", "started_at", "status"),
    ),
    "audit.fiche_fetch_started": ((F,), ("fiche_id", "from_cache", "status")),
    "audit.fiche_fetch_completed": ((F,), ("fiche_id", "recordings_count", "prospect_name", "from_cache", "status")),
    "audit.config_loaded": ((G,), ("config_id", "config_name", "steps_count", "status")),
    "audit.transcription_check": (
        (F,),
        ("fiche_id", "total_recordings", "transcribed", "needs_transcription", "status"),
    ),
    "audit.timeline_generated": ((F,), ("fiche_id", "recordings_count", "total_chunks", "status")),
    "audit.analysis_started": ((A, F), ("audit_id", "fiche_id", "total_steps", "model", "status")),
    "audit.step_started": ((A, F), ("audit_id", "step_position", "status")),
    "audit.step_completed": ((A, F), ("audit_id", "step_position", "status")),
    "audit.step_failed": ((A, F), ("audit_id", "fiche_id", "step_position", "step_name", "error", "status")),
    "audit.progress": (
        (A, F),
        (
            "audit_id",
            "fiche_id",
            "completed_steps",
            "total_steps",
            "failed_steps",
            "current_phase",
            "progress_percentage",
            "status",
        ),
    ),
    "audit.compliance_calculated": (
        (A, F),
        (
            "audit_id",
            "fiche_id",
            "overall_score",
            "score_percentage",
            "niveau",
            "is_compliant",
            "critical_issues",
            "status",
        ),
    ),
    "audit.completed": (
        (A, F),
        (
            "audit_id",
            "fiche_id",
            "overall_score",
            "score_percentage",
            "niveau",
            "is_compliant",
            "successful_steps",
            "failed_steps",
            "total_tokens",
            "duration_seconds",
            "completed_at",
            "status",
        ),
    ),
    "audit.failed": ((A, F), ("audit_id", "fiche_id", "error", "failed_at", "status")),
    # the QA loop: reviews, disputes, trust per control point (config data: global, audit-configs readers)
    "audit.reviewed": (
        (A,),
        ("audit_id", "step_position", "control_point_indexes", "review_status", "niveau", "status"),
    ),
    "audit.dispute_opened": ((A,), ("audit_id", "dispute_id", "step_position", "control_point_index", "status")),
    "audit.dispute_resolved": (
        (A,),
        ("audit_id", "dispute_id", "step_position", "control_point_index", "verdict_after", "status"),
    ),
    "audit.trust_changed": (
        (G,),
        ("config_id", "step_position", "control_point_index", "kappa", "sample_size", "status"),
    ),
    # review queues: whole-queue counts on the queue's own channel
    "review_queue.progress": ((Q,), ("queue_id", "waiting", "claimed", "done", "median_review_seconds", "status")),
    "transcription.started": ((F, T), ("fiche_id", "total_recordings", "priority", "started_at", "status")),
    "transcription.status_check": (
        (F, T),
        ("fiche_id", "total_recordings", "already_transcribed", "needs_transcription", "is_complete", "status"),
    ),
    "transcription.recording_started": (
        (F, T),
        ("fiche_id", "call_id", "recording_index", "total_to_transcribe", "status"),
    ),
    "transcription.recording_completed": (
        (F, T),
        ("fiche_id", "call_id", "transcription_id", "recording_index", "total_to_transcribe", "status"),
    ),
    "transcription.recording_failed": (
        (F, T),
        ("fiche_id", "call_id", "error", "recording_index", "total_to_transcribe", "status"),
    ),
    "transcription.progress": (
        (F, T),
        ("fiche_id", "total_recordings", "transcribed", "pending", "failed", "progress_percentage", "status"),
    ),
    "transcription.completed": (
        (F, T),
        ("fiche_id", "total_recordings", "transcribed", "failed", "duration_seconds", "completed_at", "status"),
    ),
    "transcription.failed": ((F, T), ("fiche_id", "error", "failed_at", "status")),
    "audit.evaluation_progress": (
        (G,),
        ("evaluation_id", "audit_config_id", "completed_audits", "failed_audits", "total_audits", "status"),
    ),
    "audit.evaluation_completed": (
        (G,),
        (
            "evaluation_id",
            "audit_config_id",
            "version",
            "completed_audits",
            "failed_audits",
            "changed_points",
            "status",
        ),
    ),
    "batch.progress": ((G,), ("batch_id", "operation_type", "total", "completed", "failed", "progress_percentage")),
    "batch.completed": ((G,), ("batch_id", "operation_type", "total", "completed", "failed", "duration_ms")),
    "notification": ((G,), ("type", "message", "duration")),
    "budget.exhausted": ((G,), ("budget_id", "kind", "scope", "day", "mode", "resets_at", "status")),
    "budget.resumed": ((G,), ("budget_id", "kind", "scope", "day", "status")),
    "fiches.progressive_fetch.created": ((J,), _JOB),
    "fiches.progressive_fetch.progress": ((J,), (*_JOB, "latestDate")),
    "fiches.progressive_fetch.complete": ((J,), _JOB),
    "fiches.progressive_fetch.failed": ((J,), _JOB),
}

IDS = {
    "audit_id": "aud-1",
    "fiche_id": "1234567",
    "jobId": "0f3c2f8e-aaaa-bbbb-cccc-000000000001",
    "queue_id": "42",
}
CHANNEL_OF = {
    A: "private-audit-aud-1",
    F: "private-fiche-1234567",
    J: f"private-job-{IDS['jobId']}",
    G: "private-global",
    T: "private-transcription-1234567",
    Q: "private-review-queue-42",
}


def full_payload(event: str, **extra) -> dict:
    """Every contract field of the event, plus all three routing ids."""
    payload = {name: f"v-{name}" for name in CONTRACT[event][1]}
    payload.update(IDS)
    payload.update(extra)
    return payload


def test_the_catalog_has_exactly_the_contract_events():
    assert set(EVENTS) == set(CONTRACT)


@pytest.mark.parametrize("event", sorted(CONTRACT))
def test_each_event_goes_to_its_contract_channels_even_when_the_payload_has_every_id(event):
    """The per-event lists win over the generic id rules (e.g. audit.config_loaded stays global,
    transcription.* stay on the fiche (and its transcription channel), job events on the job)."""
    kinds = CONTRACT[event][0]
    assert channels_for(event, full_payload(event)) == [CHANNEL_OF[k] for k in kinds]


@pytest.mark.parametrize("event", sorted(CONTRACT))
def test_each_required_field_is_enforced_and_named(event):
    required = CONTRACT[event][1]
    payload = {name: 1 for name in required}
    validate_event(event, payload)  # exactly the contract fields: valid
    for name in required:
        incomplete = {k: v for k, v in payload.items() if k != name}
        with pytest.raises(InvalidEvent, match=rf"\b{name}\b"):
            validate_event(event, incomplete)


def test_generic_rules_route_by_the_ids_present():
    # An event outside the catalog (generic rules): each id adds its channel; none → global.
    assert channels_for("custom.thing", {"audit_id": "a1"}) == ["private-audit-a1"]
    assert channels_for("custom.thing", {"fiche_id": "f1"}) == ["private-fiche-f1"]
    assert channels_for("custom.thing", {"jobId": "j1"}) == ["private-job-j1"]
    assert channels_for("custom.thing", {"audit_id": "a1", "fiche_id": "f1", "jobId": "j1"}) == [
        "private-audit-a1",
        "private-fiche-f1",
        "private-job-j1",
    ]
    assert channels_for("custom.thing", {"other": 1}) == ["private-global"]
    assert channels_for("custom.thing", {}) == ["private-global"]
    # batch.* and notification are global whatever ids they carry.
    assert channels_for("batch.something_new", {"audit_id": "a1", "fiche_id": "f1"}) == ["private-global"]
    assert channels_for("notification", {"fiche_id": "f1", "jobId": "j1", "type": "info"}) == ["private-global"]


def test_config_loaded_is_global_only_even_with_ids():
    payload = {
        "config_id": "c1",
        "config_name": "Std",
        "steps_count": 3,
        "status": "loaded",
        "audit_id": "a9",
        "fiche_id": "f9",
    }
    assert channels_for("audit.config_loaded", payload) == ["private-global"]


@pytest.mark.parametrize("event", ["audit.step_started", "audit.step_completed"])
def test_step_reruns_go_to_the_audit_channel_only_and_normal_steps_to_audit_and_fiche(event):
    normal = {"audit_id": "a1", "fiche_id": "f1", "step_position": 2, "step_name": "Intro", "status": "processing"}
    assert channels_for(event, normal) == ["private-audit-a1", "private-fiche-f1"]
    rerun = {"rerun_id": "r1", "audit_id": "a1", "fiche_id": "f1", "step_position": 2, "status": "rerunning"}
    assert channels_for(event, rerun) == ["private-audit-a1"]
    validate_event(event, {"rerun_id": "r1", "audit_id": "a1", "step_position": 2, "status": "rerunning"})


def test_transcription_events_are_on_the_fiche_and_the_fiches_transcription_channel():
    payload = {
        "fiche_id": "f1",
        "audit_id": "a1",
        "jobId": "j1",
        "total_recordings": 2,
        "priority": "high",
        "started_at": "2026-01-01T00:00:00Z",
        "status": "started",
    }
    assert channels_for("transcription.started", payload) == ["private-fiche-f1", "private-transcription-f1"]


def test_automation_runs_have_their_own_job_channel():
    payload = {"runId": "run-42", "audit_id": "a1", "fiche_id": "f1"}
    validate_event("automation.run.started", payload)
    assert channels_for("automation.run.started", payload) == ["private-job-automation-run-run-42"]
    assert channels_for("automation.run.completed", {"runId": 7}) == ["private-job-automation-run-7"]
    with pytest.raises(InvalidEvent, match="runId"):
        validate_event("automation.run.started", {"audit_id": "a1"})


@pytest.mark.parametrize(
    "event", ["audit.unknown", "fiches.progressive_fetch.paused", "batch.progres", "", "Notification"]
)
def test_unknown_events_are_rejected(event):
    with pytest.raises(InvalidEvent, match="unknown"):
        validate_event(event, {"audit_id": "a1", "fiche_id": "f1", "status": "x"})
    with pytest.raises(InvalidEvent):
        build_messages(event, {"audit_id": "a1", "fiche_id": "f1", "status": "x"})


def test_a_payload_must_be_an_object():
    with pytest.raises(InvalidEvent):
        validate_event("notification", ["type", "message", "duration"])  # type: ignore[arg-type]


def test_missing_field_error_names_the_field():
    payload = full_payload("audit.progress")
    del payload["current_phase"]
    with pytest.raises(InvalidEvent, match="current_phase"):
        build_messages("audit.progress", payload)


# --- Channel names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel",
    ["private-global", "private-fiche-1234567", "private-job-" + "a" * 152, "private-a_b=c@d,e.f;g-h", "x" * 164],
)
def test_valid_channel_names(channel):
    assert validate_channel(channel) == channel


@pytest.mark.parametrize(
    "channel",
    [
        "private-a:b",
        "presence-x:y",
        "x" * 165,
        "private-" + "f" * 200,
        "",
        "private-fiche-1 2",
        "private-fiche-é",
        "private-fiche-1/2",
        "private-fiche-1\n",
        "private-fiche-#1",
        None,
    ],
)
def test_invalid_channel_names(channel):
    with pytest.raises(InvalidEvent):
        validate_channel(channel)


def test_ids_that_would_make_an_invalid_channel_are_rejected():
    with pytest.raises(InvalidEvent):
        channels_for("transcription.failed", {"fiche_id": "12:34", "error": "x", "failed_at": "t", "status": "failed"})
    with pytest.raises(InvalidEvent):
        channels_for("fiches.progressive_fetch.created", {"jobId": "j" * 160})


def test_no_channel_contains_a_colon_and_each_is_listed_once():
    for event in CONTRACT:
        channels = channels_for(event, full_payload(event))
        assert all(":" not in c for c in channels)
        assert len(channels) == len(set(channels))


# --- Payload truncation -------------------------------------------------------------------------------


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def test_a_small_payload_is_unchanged():
    payload = {"fiche_id": "F1", "status": "started", "message": "Démarré à 9h", "n": 3, "nested": {"a": [1, 2]}}
    out = encode_payload(payload)
    assert json.loads(out) == payload
    assert "truncated" not in json.loads(out)


def test_a_payload_of_exactly_the_limit_is_unchanged():
    base = {"fiche_id": "F1", "message": ""}
    filler = 10240 - len(orjson.dumps(base))
    payload = {"fiche_id": "F1", "message": "a" * filler}
    assert len(orjson.dumps(payload)) == 10240
    assert json.loads(encode_payload(payload)) == payload
    bigger = {"fiche_id": "F1", "message": "a" * (filler + 1)}
    assert json.loads(encode_payload(bigger)).get("truncated") is True


def _big_job_payload() -> dict:
    first = date(2018, 1, 1)
    completed = [(first + timedelta(days=i)).isoformat() for i in range(3000)]
    return {
        "jobId": "0f3c2f8e-aaaa-bbbb-cccc-000000000042",
        "status": "processing",
        "startDate": completed[0],
        "endDate": "2026-03-31",
        "progress": 97,
        "completedDays": 3000,
        "totalDays": 3012,
        "totalFiches": 123456,
        "datesCompleted": completed,
        "datesRemaining": ["2026-03-30", "2026-03-31"],
        "datesFailed": ["2020-02-29"],
        "latestDate": "2026-03-29",
        "error": "Échec répété de la récupération — é" * 400,
    }


def test_a_50kb_job_payload_is_truncated_under_10kb_with_identifiers_and_counters_intact():
    payload = _big_job_payload()
    assert len(orjson.dumps(payload)) > 50_000
    out = encode_payload(payload)
    assert _size(out) <= 10240
    data = json.loads(out)
    assert data["truncated"] is True
    for key in ("jobId", "status", "progress", "completedDays", "totalDays", "totalFiches"):
        assert data[key] == payload[key], key
    # what is left of the lists is a prefix of the original (never altered values)
    for key in ("datesCompleted", "datesRemaining", "datesFailed"):
        if key in data:
            assert data[key] == payload[key][: len(data[key])]


def test_the_truncated_job_payload_still_goes_out_through_build_messages():
    payload = _big_job_payload()
    messages = build_messages("fiches.progressive_fetch.progress", payload)
    assert [m["channel"] for m in messages] == [f"private-job-{payload['jobId']}"]
    assert messages[0]["name"] == "fiches.progressive_fetch.progress"
    assert _size(messages[0]["data"]) <= 10240
    assert json.loads(messages[0]["data"])["jobId"] == payload["jobId"]


def test_accented_characters_count_as_utf8_bytes():
    # 6 000 characters but 12 000+ bytes: over the limit in bytes, not in characters.
    payload = {"fiche_id": "F1", "audit_id": "A1", "status": "failed", "error": "é" * 6000}
    assert len(json.dumps(payload, ensure_ascii=False)) < 10240 < len(orjson.dumps(payload))
    out = encode_payload(payload)
    assert _size(out) <= 10240
    data = json.loads(out)
    assert data["truncated"] is True
    assert (data["fiche_id"], data["audit_id"], data["status"]) == ("F1", "A1", "failed")
    # Under the limit in bytes: unchanged even though accented.
    small = {"fiche_id": "F1", "error": "é" * 5000}
    assert json.loads(encode_payload(small)) == small


def test_ids_and_counters_survive_when_many_fields_are_large():
    payload = {
        "audit_id": "A-77",
        "fiche_id": "F-77",
        "status": "completed",
        "overall_score": 12,
        "failed_steps": 0,
        **{f"blob_{i}": "x" * 3000 for i in range(10)},
        "items": [{"k": "v" * 50}] * 300,
    }
    data = json.loads(encode_payload(payload))
    assert _size(encode_payload(payload)) <= 10240
    assert data["truncated"] is True
    for key in ("audit_id", "fiche_id", "status", "overall_score", "failed_steps"):
        assert data[key] == payload[key]


def test_a_custom_limit_is_honoured():
    payload = {"fiche_id": "F1", "message": "m" * 500}
    out = encode_payload(payload, limit=200)
    assert _size(out) <= 200
    assert json.loads(out)["fiche_id"] == "F1"


# --- Nothing through a side door: what each channel carries -----------------------------------------------------


def _payloads(event: str, payload: dict, **kwargs) -> dict[str, dict]:
    return {m["channel"]: json.loads(m["data"]) for m in build_messages(event, payload, **kwargs)}


@pytest.mark.parametrize("event", sorted(e for e in CONTRACT if e.startswith(("audit.", "transcription."))))
def test_a_fiches_only_subscriber_gets_identifiers_and_status_of_audit_and_transcription_events(event):
    """The fiche channel is authorized by fiches.read alone: the audit's score, niveau, verdicts, errors,
    transcription counts never reach it; the entity's own channel keeps the full payload."""
    payload = full_payload(event, niveau="REJET", score_percentage=42.5, error="boom")
    sent = _payloads(event, payload)
    reader = EVENTS[event].reader
    for channel, data in sent.items():
        if channel in (CHANNEL_OF[F], CHANNEL_OF[G]) and reader != "fiches":
            assert data == {
                **{k: v for k, v in payload.items() if k == "status" or k.endswith(("_id", "Id"))},
                "redacted": True,
            }, channel
            assert not {"niveau", "score_percentage", "error"} & set(data)
        else:
            assert data == payload, channel


def test_each_channel_kind_reads_what_its_authorization_implies():
    from realtime.registry import channel_reads

    assert channel_reads("private-audit-a1", "audits") and not channel_reads("private-audit-a1", "transcriptions")
    assert channel_reads("private-fiche-f1", "fiches") and not channel_reads("private-fiche-f1", "audits")
    assert channel_reads("private-transcription-f1", "transcriptions")
    assert not channel_reads("private-global", "batches") and channel_reads("private-global", None)
    assert channel_reads("private-user-7", "batches") and channel_reads("private-user-7", "audits")
    assert not channel_reads("private-unknown-1", "fiches")


def test_batch_events_are_notify_only_on_the_global_channel_and_whole_on_their_requesters_channel():
    payload = full_payload("batch.progress")
    sent = _payloads("batch.progress", payload, user_id=7)
    assert list(sent) == ["private-global", "private-user-7"]
    assert sent["private-global"] == {
        "batch_id": payload["batch_id"],
        "audit_id": "aud-1",
        "fiche_id": "1234567",
        "jobId": IDS["jobId"],
        "queue_id": IDS["queue_id"],
        "redacted": True,
    }
    assert sent["private-user-7"] == payload
    config = _payloads("audit.config_loaded", full_payload("audit.config_loaded"))
    assert config["private-global"]["redacted"] is True and "config_name" not in config["private-global"]


def test_qa_loop_events_carry_whole_payloads_only_where_every_subscriber_may_read_them():
    """A queue's progress (counts only) goes whole on its own channel; a point's trust (config data, for
    audit-configs readers) reaches the global channel as ids and state; disputes stay on the audit."""
    progress = {"queue_id": "42", "waiting": 3, "claimed": 1, "done": 2, "median_review_seconds": 61.5, "status": "p"}
    assert _payloads("review_queue.progress", progress) == {"private-review-queue-42": progress}
    trust = {
        "config_id": "7",
        "step_position": 7,
        "control_point_index": 0,
        "kappa": 0.12,
        "agreement": 0.55,
        "sample_size": 20,
        "status": "withdrawn",
    }
    assert _payloads("audit.trust_changed", trust) == {
        "private-global": {"config_id": "7", "status": "withdrawn", "redacted": True}
    }
    opened = {
        "audit_id": "a1",
        "dispute_id": "d1",
        "step_position": 7,
        "control_point_index": 0,
        "verdict": "fail",
        "proposed_status": "pass",
        "status": "open",
    }
    assert _payloads("audit.dispute_opened", opened) == {"private-audit-a1": opened}


def test_urls_and_secrets_never_go_out_through_pusher():
    payload = full_payload(
        "transcription.recording_started",
        recording_url="https://rec.example/c1.mp3?X-Amz-Signature=abc",
        webhookSecret="whsec_x",
        api_token="t",
    )
    for data in _payloads("transcription.recording_started", payload).values():
        assert not {"recording_url", "webhookSecret", "api_token"} & set(data)
        assert "X-Amz-Signature" not in json.dumps(data)
