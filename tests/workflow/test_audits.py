"""Audit workflows with real worker processes and three simulators over HTTP (CRM, speech-to-text,
LLM) and a Pusher-API stub: a compliant sale scores high; a call without the recording notice is
``REJET``; fabricated, number-altered and negation-flipped quotes never pass the evidence gate; the
OpenAI-compatible servers' quirks are absorbed; duplicated step tasks and a worker SIGKILLed
mid-step still end the audit exactly once; prompt and tools modes agree; scope holds on channels."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter

import pytest
from rest_framework.test import APIClient

from accounts.tokens import issue_tokens
from audits.defaults import DEFAULT_CONFIG_NAME
from audits.models import Audit, AuditConfig, Citation, ControlPointResult
from audits.simulator.server import LlmSimulator
from realtime.events import EVENTS
from tests.workflow.conftest import AUDIT_LLM_KEY as LLM_KEY
from tests.workflow.conftest import wait_for
from tests.workflow.faults import Recorder
from transcriptions.models import Transcription
from transcriptions.selectors import timeline_for
from transcriptions.simulator.script import normalize, truth_for

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

# Fiches of the CRM simulator (seed 42, 6 a day) and what their calls hold (truth_for).
COMPLIANT = "2227002"  # one full call, every mandatory statement said (Lyon-2)
COMPLIANT_2 = "2228004"  # one full call, compliant (Marseille)
NO_RECORDING_NOTICE = "2228000"  # one full call without the recording notice (Lyon-2)
RECORDING_STEP = 4  # "Information sur l'enregistrement" in the default config


@pytest.fixture
def auditor(make_role, make_user):
    role = make_role("auditor-all", audits=("rw", "ALL"), fiches=("r", "ALL"))
    return make_user(role, email="auditor@example.com")


def config_id() -> int:
    return AuditConfig.objects.get(name=DEFAULT_CONFIG_NAME).pk


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_tokens(user).access}")
    return client


def run_audit(user, fiche_id: str, **body) -> str:
    response = client_for(user).post(
        "/api/audits/run", {"fiche_id": fiche_id, "audit_config_id": config_id(), **body}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    return response.json()["audit_id"]


def audit_ended(audit_id: str, timeout: float = 90) -> Audit:
    return wait_for(
        lambda: (a := Audit.objects.get(pk=audit_id)).is_terminal and a,
        timeout=timeout,
        message=f"audit {audit_id} to end",
    )


def detail(user, audit_id: str) -> dict:
    response = client_for(user).get(f"/api/audits/{audit_id}")
    assert response.status_code == 200, response.content
    return response.json()


def pusher_events(pusher: Recorder, channel: str, name: str | None = None) -> list[tuple[str, dict]]:
    return pusher.channel_events(channel, name)


def step_requests(llm: LlmSimulator) -> Counter:
    """LLM calls per step position (from the first line of the prompt)."""
    counts: Counter = Counter()
    for r in llm.requests():
        if r["path"] != "/v1/chat/completions" or r["status"] != 200:
            continue
        user_text = next(m["content"] for m in r["body"]["messages"] if m["role"] == "user")
        if user_text.startswith("# Étape "):
            counts[int(user_text.split()[2])] += 1
    return counts


def transcript_turns(fiche_id: str) -> list[dict]:
    from fiches.models import FicheCache

    return timeline_for(FicheCache.objects.get(fiche_id=fiche_id)).turns


def verdicts(data: dict) -> dict[tuple[int, int], str]:
    return {(s["position"], p["index"]): p["status"] for s in data["steps"] for p in s["control_points"]}


def assert_citations_are_the_calls_own_words(data: dict, fiche_id: str) -> None:
    """Each verified citation is the transcript's own words, inside one turn of its call, at its times."""
    turns = transcript_turns(fiche_id)
    assert set(Transcription.objects.filter(fiche__fiche_id=fiche_id).values_list("call_id", flat=True)) >= {
        t["call_id"] for t in turns
    }
    for step in data["steps"]:
        for point in step["control_points"]:
            for c in point["citations"]:
                holding = [
                    t for t in turns if t["call_id"] == c["call_id"] and normalize(c["text"]) in normalize(t["text"])
                ]
                assert holding, c
                assert any(t["start"] - 0.5 <= c["start"] <= c["end"] <= t["end"] + 0.5 for t in holding), c


# --- The workflows ----------------------------------------------------------------------------------


def assert_fiche_channel_is_safe_for_a_fiches_only_reader(events: list[tuple[str, dict]]) -> None:
    """The fiche channel is authorized by fiches.read alone: of audit and transcription events it carries
    identifiers and status only (notify → refetch through the API's grants); of the fiche's own fetch, the
    fiche's data."""
    assert events
    for name, payload in events:
        if name.startswith("audit.fiche_fetch_"):
            assert set(EVENTS[name].required) <= set(payload), (name, payload)
            continue
        assert payload.get("redacted") is True, (name, payload)
        assert set(payload) <= {
            "audit_id",
            "fiche_id",
            "call_id",
            "transcription_id",
            "audit_config_id",
            "status",
            "redacted",
        }, (name, payload)


@pytest.fixture
def fiches_reader(make_role, make_user):
    """Reads every fiche, no audits, transcriptions or recordings grant."""
    return make_user(make_role("fiches-only", fiches=("r", "ALL")), email="fiches-only@example.com")


def test_a_compliant_sale_is_audited_end_to_end_with_every_event_of_the_contract(audit_stack, auditor, fiches_reader):
    crm, stt, llm, pusher, start = audit_stack
    worker = start("aud1")
    audit_id = run_audit(auditor, COMPLIANT)  # nothing transcribed yet: the audit waits, then resumes
    audit = audit_ended(audit_id)
    assert audit.status == "completed", audit.error
    assert audit.waiting_since is not None  # it waited for the transcription run, which resumed it
    data = detail(auditor, audit_id)
    assert data["niveau"] in ("EXCELLENT", "BON") and data["is_compliant"] is True, data["critical_issues"]
    assert data["score_percentage"] >= 75 and data["critical_issues"] == []
    assert data["config_version"] == 1 and data["model"] == "sim-judge-1" and data["total_tokens"] > 0
    assert [s["position"] for s in data["steps"]] == list(range(1, 10))
    assert all(s["status"] == "completed" for s in data["steps"])
    for step in data["steps"]:
        for point in step["control_points"]:
            if point["is_critical"]:
                assert point["status"] == "pass" and point["citations"], point
            if point["status"] == "pass":
                assert point["citations"], point  # no pass without a verified quote
    assert_citations_are_the_calls_own_words(data, COMPLIANT)
    assert step_requests(llm) == Counter({p: 1 for p in range(1, 10)})  # one LLM call per step

    audit_channel = pusher_events(pusher, f"private-audit-{audit_id}")
    fiche_channel = pusher_events(pusher, f"private-fiche-{COMPLIANT}")
    names = [n for n, _ in audit_channel]
    assert names[0] == "audit.started" and names[-1] == "audit.completed"
    assert names.count("audit.completed") == 1
    assert Counter(names)["audit.step_completed"] == 9 and Counter(names)["audit.step_started"] == 9
    assert "audit.analysis_started" in names and "audit.compliance_calculated" in names
    fiche_names = [n for n, _ in fiche_channel]
    for name in ("audit.fiche_fetch_started", "audit.fiche_fetch_completed", "audit.transcription_check"):
        assert name in fiche_names
    assert "audit.timeline_generated" in fiche_names and fiche_names.count("audit.completed") == 1
    for name, payload in audit_channel:
        assert set(EVENTS[name].required) <= set(payload), (name, payload)
    assert_fiche_channel_is_safe_for_a_fiches_only_reader(fiche_channel)
    # A fiches-only subscriber: allowed on the fiche channel, refused on the audit's and the transcription's.
    fiches_only = client_for(fiches_reader)
    for channel, allowed in (
        (f"private-fiche-{COMPLIANT}", 200),
        (f"private-audit-{audit_id}", 403),
        (f"private-transcription-{COMPLIANT}", 403),
    ):
        auth = fiches_only.post(
            "/api/realtime/pusher/auth", {"socket_id": "123.456", "channel_name": channel}, format="json"
        )
        assert auth.status_code == allowed, (channel, auth.content)
    transcription_channel = pusher_events(pusher, f"private-transcription-{COMPLIANT}")
    assert [n for n, _ in transcription_channel][-1] == "transcription.completed"
    assert all(set(EVENTS[n].required) <= set(p) and "recording_url" not in p for n, p in transcription_channel)
    completed = dict(audit_channel)["audit.completed"]
    assert completed["niveau"] == data["niveau"] and isinstance(completed["overall_score"], str)
    assert completed["successful_steps"] == 9 and completed["failed_steps"] == 0
    progress = [p for n, p in audit_channel if n == "audit.progress"]
    assert progress[-1]["completed_steps"] == 9 and progress[-1]["progress_percentage"] == 100
    assert all(LLM_KEY not in json.dumps(r["headers"]) for r in llm.requests())  # the log hides the bearer
    assert LLM_KEY not in worker.log()


def test_a_call_without_the_recording_notice_fails_that_critical_point_and_is_rejet(audit_stack, auditor):
    crm, stt, llm, pusher, start = audit_stack
    truth = {s["key"]: s["variant"] for s in truth_for(f"c-{NO_RECORDING_NOTICE}-1", seed=42, crm_seed=42)["segments"]}
    assert truth["recording_notice"] == "missing" and list(truth.values()).count("ok") == len(truth) - 1
    start("aud2")
    audit = audit_ended(run_audit(auditor, NO_RECORDING_NOTICE))
    assert audit.status == "completed", audit.error
    data = detail(auditor, str(audit.pk))
    assert data["niveau"] == "REJET" and data["is_compliant"] is False
    recording = next(s for s in data["steps"] if s["position"] == RECORDING_STEP)
    assert recording["conforme"] is False
    assert any(p["is_critical"] and p["status"] in ("fail", "uncertain") for p in recording["control_points"])
    assert any(issue["step_position"] == RECORDING_STEP for issue in data["critical_issues"]), data["critical_issues"]
    others = [s for s in data["steps"] if s["position"] != RECORDING_STEP and s["is_critical"]]
    assert all(s["conforme"] for s in others), [(s["position"], s["conforme"]) for s in others]


def test_fabricated_altered_and_negated_quotes_never_pass_the_gate(audit_stack, auditor):
    crm, stt, llm, pusher, start = audit_stack
    start("aud3")
    baseline = audit_ended(run_audit(auditor, COMPLIANT))
    assert baseline.status == "completed" and baseline.is_compliant
    true_quotes = {
        (c.control_point.step_result.position, c.control_point.index, c.position): c.quote
        for c in Citation.objects.filter(control_point__step_result__audit=baseline).select_related(
            "control_point__step_result"
        )
    }

    # Every quote fabricated (the knobs at 100%: fabricate wins): nothing verified, nothing passes.
    llm.config.update({"fabricate_rate": 1.0, "alter_numbers_rate": 1.0, "negate_rate": 1.0})
    fabricated = audit_ended(run_audit(auditor, COMPLIANT))
    assert fabricated.status == "completed", fabricated.error
    cited = Citation.objects.filter(control_point__step_result__audit=fabricated)
    assert cited.count() >= 9 and not cited.filter(verified=True).exists()
    assert set(cited.values_list("reason", flat=True)) <= {"not_found", "too_short", "speaker_mismatch"}
    points = ControlPointResult.objects.filter(step_result__audit=fabricated)
    assert not points.filter(status="pass").exists() and points.filter(ai_status="pass").exists()
    assert fabricated.niveau == "REJET" and fabricated.is_compliant is False and fabricated.needs_review

    # Numbers altered, then negations flipped: the same requests get the same answers, so a quote that
    # differs from the baseline's was altered by the simulator, and none of those is ever verified.
    for knob, reason in (("alter_numbers_rate", "number_mismatch"), ("negate_rate", "negation_mismatch")):
        llm.config.update({"fabricate_rate": 0.0, "alter_numbers_rate": 0.0, "negate_rate": 0.0, knob: 1.0})
        audit = audit_ended(run_audit(auditor, COMPLIANT))
        assert audit.status == "completed", audit.error
        altered = 0
        for c in Citation.objects.filter(control_point__step_result__audit=audit).select_related(
            "control_point__step_result"
        ):
            key = (c.control_point.step_result.position, c.control_point.index, c.position)
            if c.quote != true_quotes.get(key):
                altered += 1
                assert not c.verified and c.reason == reason, (knob, c.quote, c.reason)
        assert altered >= 2, knob
        for point in ControlPointResult.objects.filter(step_result__audit=audit, status="pass"):
            assert point.citations.filter(verified=True).exists()
            for c in point.citations.filter(verified=True):
                key = (point.step_result.position, point.index, c.position)
                assert c.quote == true_quotes[key]


def test_dodge_and_wrong_speaker_lies_never_make_a_point_pass_or_disappear(audit_stack, auditor):
    """``dodge`` (not_applicable everywhere) and ``wrong_speaker`` (the client's words for agent points), in
    prompt and tools mode: every point is still there, none passes, the audit is REJET and goes to review."""
    crm, stt, llm, pusher, start = audit_stack
    start("aud-lies")
    baseline = audit_ended(run_audit(auditor, COMPLIANT))
    assert baseline.status == "completed" and baseline.is_compliant
    expected_points = set(verdicts(detail(auditor, str(baseline.pk))))
    critical = {
        (s["position"], p["index"])
        for s in detail(auditor, str(baseline.pk))["steps"]
        for p in s["control_points"]
        if p["is_critical"]
    }
    for knob, use_rlm in (
        ("dodge_rate", False),
        ("dodge_rate", True),
        ("wrong_speaker_rate", False),
        ("wrong_speaker_rate", True),
    ):
        llm.config.update({"dodge_rate": 0.0, "wrong_speaker_rate": 0.0, knob: 1.0})
        audit = audit_ended(run_audit(auditor, COMPLIANT, use_rlm=use_rlm))
        assert audit.status == "completed", (knob, audit.error)
        data = detail(auditor, str(audit.pk))
        points = {(s["position"], p["index"]): p for s in data["steps"] for p in s["control_points"]}
        assert set(points) == expected_points, knob  # nothing disappears
        assert not [k for k, p in points.items() if p["status"] == "pass"], knob  # nothing passes
        assert (data["niveau"], data["is_compliant"], data["needs_review"]) == ("REJET", False, True), knob
        assert {(i["step_position"], i["control_point_index"]) for i in data["critical_issues"]} == critical, knob
        for key, point in points.items():
            if knob == "dodge_rate":
                assert point["model_status"] == "not_applicable", (key, point)
                expected = "not_applicable" if point["conditional"] else "uncertain"
                assert point["status"] == expected, (key, point)
            else:
                assert point["model_status"] == "pass" and point["status"] == "uncertain", (key, point)
                assert point["gate_reason"] == "no_verified_quote" and not point["citations"], (key, point)
                assert point["rejected_citations"], (key, point)
                assert {c["reason"] for c in point["rejected_citations"]} <= {"speaker_mismatch", "not_found"}
        if knob == "wrong_speaker_rate":
            reasons = Counter(
                Citation.objects.filter(control_point__step_result__audit=audit).values_list("reason", flat=True)
            )
            assert reasons["speaker_mismatch"] >= len(expected_points) // 2, reasons  # found, but the client's


def test_each_server_quirk_is_absorbed_and_prompt_and_tools_modes_agree(audit_stack, auditor):
    crm, stt, llm, pusher, start = audit_stack
    start("aud4")
    prompt_mode = audit_ended(run_audit(auditor, COMPLIANT_2))
    assert prompt_mode.status == "completed", prompt_mode.error
    llm.config.update({"no_json_schema": True, "fenced_json": True, "args_as_object": True, "no_tool_ids": True})
    llm.clear_requests()
    tools_mode = audit_ended(run_audit(auditor, COMPLIANT_2, useRlm=True))
    assert tools_mode.status == "completed", tools_mode.error
    assert tools_mode.tools_mode and tools_mode.total_tokens > 0

    requests = [r for r in llm.requests() if r["path"] == "/v1/chat/completions"]
    formats = Counter((r["body"].get("response_format") or {}).get("type") for r in requests)
    assert any(r["status"] == 400 for r in requests)  # json_schema refused once…
    assert formats["json_object"] >= 9  # …then json_object (the client remembers the fallback)
    tool_rounds = [r for r in requests if any(m["role"] == "tool" for m in r["body"]["messages"])]
    assert len(tool_rounds) >= 9  # the model searched the transcript; no timeline in any prompt
    assert not any("## Transcription" in (m.get("content") or "") for r in requests for m in r["body"]["messages"])

    a, b = detail(auditor, str(prompt_mode.pk)), detail(auditor, str(tools_mode.pk))
    assert (a["niveau"], a["is_compliant"]) == (b["niveau"], b["is_compliant"])
    assert verdicts(a) == verdicts(b)
    assert_citations_are_the_calls_own_words(b, COMPLIANT_2)


def test_duplicate_step_tasks_and_a_worker_killed_mid_step_end_the_audit_exactly_once(audit_stack, auditor):
    from audits.tasks import audit_step_analyze, reconcile_audits

    crm, stt, llm, pusher, start = audit_stack
    timing = {"CLAIM_LEASE_SECONDS": "4", "CLAIM_HEARTBEAT_SECONDS": "1", "AUDIT_STALL_SECONDS": "2"}
    first = start("aud5a", **timing)
    wait_for(lambda: audit_ended(run_audit(auditor, COMPLIANT)), message="transcripts cached")
    llm.clear_requests()
    with pusher.lock:
        pusher.records.clear()
    llm.config.latency_ms = 2500
    audit_id = run_audit(auditor, COMPLIANT)
    wait_for(lambda: Audit.objects.get(pk=audit_id).dispatched_at, message="steps fanned out")
    for position in range(1, 10):  # a duplicate of every step task
        audit_step_analyze.delay(audit_id, position)
    wait_for(lambda: llm.current_in_flight() >= 3, message="LLM calls in flight", interval=0.05)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    llm.config.latency_ms = 0
    start("aud5b", **timing)
    stop = threading.Event()

    def beat():
        while not stop.wait(1.0):
            reconcile_audits.delay()

    beat_thread = threading.Thread(target=beat, daemon=True)
    beat_thread.start()
    try:
        audit = audit_ended(audit_id, timeout=90)
    finally:
        stop.set()
        beat_thread.join()
    assert audit.status == "completed", audit.error
    channel = f"private-audit-{audit_id}"
    wait_for(lambda: pusher_events(pusher, channel, "audit.completed"), message="audit.completed published")
    stop.wait(1.5)  # late duplicates, if any, would land now
    assert len(pusher_events(pusher, channel, "audit.completed")) == 1
    per_step = step_requests(llm)
    assert set(per_step) == set(range(1, 10))
    assert all(n <= 2 for n in per_step.values()), per_step  # once, or twice when killed mid-call
    assert sum(n == 2 for n in per_step.values()) >= 3, per_step  # the calls in flight at the kill were redone
    data = detail(auditor, audit_id)
    assert all(s["status"] == "completed" for s in data["steps"]) and data["is_compliant"]


def test_scope_denies_an_audit_of_another_group_on_every_route_and_its_channel(audit_stack, make_role, make_user):
    crm, stt, llm, pusher, start = audit_stack
    start("aud6")
    group_role = make_role("aud-group", audits=("rw", "GROUP"), fiches=("r", "GROUP"))
    marseille = make_user(group_role, groupes=["Marseille"])
    lyon = make_user(group_role, groupes=["Lyon-2"])
    # A GROUP user cannot make us fetch a fiche we do not hold (its group is unknown until fetched):
    # refused as a foreign fiche, before any CRM call; once cached (as after a range read), it is theirs.
    asked = len(crm.requests())
    refused = client_for(lyon).post(
        "/api/audits/run", {"fiche_id": COMPLIANT, "audit_config_id": config_id()}, format="json"
    )
    assert refused.status_code == 403 and len(crm.requests()) == asked
    from fiches.services.details import fiche_ensure_details

    fiche_ensure_details(fiche_id=COMPLIANT)
    audit = audit_ended(run_audit(lyon, COMPLIANT))
    assert audit.status == "completed"

    other = client_for(marseille)
    assert other.get(f"/api/audits/{audit.pk}").status_code == 403
    assert other.get("/api/audits").json()["results"] == []
    assert other.get(f"/api/audits?fiche_id={COMPLIANT}").json()["results"] == []
    denied = other.post("/api/audits/run", {"fiche_id": COMPLIANT, "audit_config_id": config_id()}, format="json")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "scope_denied"
    auth = other.post(
        "/api/realtime/pusher/auth",
        {"socket_id": "123.456", "channel_name": f"private-audit-{audit.pk}"},
        format="json",
    )
    assert auth.status_code == 403
    own = client_for(lyon).post(
        "/api/realtime/pusher/auth",
        {"socket_id": "123.456", "channel_name": f"private-audit-{audit.pk}"},
        format="json",
    )
    assert own.status_code == 200 and "auth" in own.json()
    assert [a["audit_id"] for a in client_for(lyon).get("/api/audits").json()["results"]] == [str(audit.pk)]


def test_failing_steps_end_the_audit_failed_with_partial_results_and_the_completed_steps_kept(audit_stack, auditor):
    crm, stt, llm, pusher, start = audit_stack
    start("aud7", AUDIT_STEP_MAX_ERRORS="2")
    audit_ended(run_audit(auditor, COMPLIANT))  # transcripts cached

    # Some steps are refused for good (content filter, seeded by the request): no retry, the others complete.
    llm.config.content_filter_rate = 0.4
    llm.clear_requests()
    audit_id = run_audit(auditor, COMPLIANT)
    audit = audit_ended(audit_id)
    assert audit.status == "failed" and "content filter" in audit.error
    data = detail(auditor, audit_id)
    done = [s for s in data["steps"] if s["status"] == "completed"]
    failed = [s for s in data["steps"] if s["status"] == "failed"]
    assert done and failed and len(done) + len(failed) == 9
    assert all(s["score"] is not None and s["control_points"] for s in done)  # kept, with their evidence
    assert all("content filter" in s["error"] for s in failed)
    assert all(n == 1 for n in step_requests(llm).values())  # a permanent error is not retried
    [(_, payload)] = pusher_events(pusher, f"private-audit-{audit_id}", "audit.failed")
    assert payload["partial_results"] == {"completed_steps": len(done), "total_steps": 9, "failed_steps": len(failed)}
    assert payload["failed_phase"] == "analysis" and not pusher_events(
        pusher, f"private-audit-{audit_id}", "audit.completed"
    )

    # Every call fails (HTTP 500): each step is retried AUDIT_STEP_MAX_ERRORS times (3 calls), then fails.
    llm.config.update({"content_filter_rate": 0.0, "fail_rate": 1.0})
    llm.clear_requests()
    audit = audit_ended(run_audit(auditor, COMPLIANT))
    assert audit.status == "failed" and audit.error.startswith("9 of 9 step(s) failed")
    attempts = Counter(
        int(next(m["content"] for m in r["body"]["messages"] if m["role"] == "user").split()[2])
        for r in llm.requests()
        if r["path"] == "/v1/chat/completions"
    )
    assert attempts == Counter({p: 3 for p in range(1, 10)})


# --- After the audit: reruns, reviews, batches ----------------------------------------------------------

WITHDRAWAL_STEP = 7  # "Droit de rétractation": critical, one critical control point


def post(user, path: str, body: dict | None = None):
    return client_for(user).post(path, body or {}, format="json")


def rerun_ended(rerun_id: str, timeout: float = 60):
    from audits.models import RerunEvent

    return wait_for(
        lambda: (e := RerunEvent.objects.get(pk=rerun_id)).status in ("completed", "failed") and e,
        timeout=timeout,
        message=f"rerun {rerun_id} to end",
    )


def test_reruns_replace_the_stored_step_and_rescore_the_audit_and_reviews_override_the_ai(audit_stack, auditor):
    from audits.models import HumanReview, RerunEvent

    crm, stt, llm, pusher, start = audit_stack
    start("aud8")
    audit_id = run_audit(auditor, COMPLIANT)
    assert audit_ended(audit_id).niveau == "EXCELLENT"
    # The end's events leave after its commit: let them arrive before listening for the rerun's alone.
    wait_for(lambda: pusher_events(pusher, f"private-audit-{audit_id}", "audit.completed"), message="audit.completed")
    with pusher.lock:
        pusher.records.clear()

    # A step rerun while the model invents its quotes: the critical point is left uncertain → REJET.
    llm.config.fabricate_rate = 1.0
    llm.clear_requests()
    guidance = "Citez uniquement la phrase exacte du conseiller sur le délai de rétractation."
    response = post(auditor, f"/api/audits/{audit_id}/steps/{WITHDRAWAL_STEP}/rerun", {"instructions": guidance})
    assert response.status_code == 202, response.content
    rerun_id = response.json()["rerun_id"]
    second = post(auditor, f"/api/audits/{audit_id}/steps/{WITHDRAWAL_STEP}/rerun")
    assert second.status_code == 409 and second.json()["error"]["code"] == "rerun_in_progress"  # never interleaved
    event = rerun_ended(rerun_id)
    assert event.status == "completed", event.error
    [request] = [r for r in llm.requests() if r["path"] == "/v1/chat/completions"]
    prompt = next(m["content"] for m in request["body"]["messages"] if m["role"] == "user")
    assert prompt.startswith(f"# Étape {WITHDRAWAL_STEP} ") and guidance in prompt  # same prompt, plus guidance
    data = detail(auditor, audit_id)
    step = next(s for s in data["steps"] if s["position"] == WITHDRAWAL_STEP)
    assert step["control_points"][0]["status"] == "uncertain" and step["control_points"][0]["rejected_citations"]
    assert step["score"] == 0 and step["conforme"] is False
    assert data["niveau"] == "REJET" and data["is_compliant"] is False and data["needs_review"] is True
    assert event.comparison["niveau"] == {"before": "EXCELLENT", "after": "REJET"}
    assert event.comparison["control_points"] == [{"index": 0, "before": "pass", "after": "uncertain", "changed": True}]
    rerun_events = pusher_events(pusher, f"private-audit-{audit_id}")
    assert [(n, p["status"]) for n, p in rerun_events] == [
        ("audit.step_started", "rerunning"),
        ("audit.step_completed", "rerun_completed"),
    ]
    assert all(p["rerun_id"] == rerun_id for _, p in rerun_events)
    assert rerun_events[1][1]["comparison"] == event.comparison and rerun_events[1][1]["original"]["score"] == 10
    assert not pusher_events(pusher, f"private-fiche-{COMPLIANT}")  # reruns are on the audit channel only

    # A reviewer listened to the call: the point passes; the AI's verdict stays beside theirs.
    assert (
        post(auditor, f"/api/audits/{audit_id}/steps/{WITHDRAWAL_STEP}/reviews", {"status": "pass"}).status_code == 400
    )
    response = post(
        auditor,
        f"/api/audits/{audit_id}/steps/{WITHDRAWAL_STEP}/reviews",
        {"control_point_index": 0, "status": "pass", "comment": "Dit à 02:34, quatorze jours."},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    point = body["step"]["control_points"][0]
    assert (point["status"], point["ai_status"], point["human_status"]) == ("pass", "uncertain", "pass")
    assert (
        body["audit"]["niveau"] == "EXCELLENT" and body["audit"]["is_compliant"] and not body["audit"]["needs_review"]
    )
    assert HumanReview.objects.get().previous_status == "uncertain"

    # A control-point rerun with an honest model: the AI agrees again; the reviewer's verdict still counts.
    llm.config.fabricate_rate = 0.0
    response = post(auditor, f"/api/audits/{audit_id}/steps/{WITHDRAWAL_STEP}/control-points/0/rerun")
    assert response.status_code == 202, response.content
    assert rerun_ended(response.json()["rerun_id"]).status == "completed"
    point = next(s for s in detail(auditor, audit_id)["steps"] if s["position"] == WITHDRAWAL_STEP)["control_points"][0]
    assert (point["status"], point["ai_status"], point["human_status"]) == ("pass", "pass", "pass")
    assert point["citations"]

    history = client_for(auditor).get(f"/api/audits/{audit_id}/history").json()["entries"]
    assert [(h["type"], h.get("scope"), h["step_position"]) for h in history] == [
        ("rerun", "step", WITHDRAWAL_STEP),
        ("review", None, WITHDRAWAL_STEP),
        ("rerun", "control_point", WITHDRAWAL_STEP),
    ]
    assert history[0]["instructions"] == guidance and history[0]["by"] == "auditor@example.com"
    assert history[1]["comment"] == "Dit à 02:34, quatorze jours." and history[1]["ai_status"] == "uncertain"
    assert RerunEvent.objects.count() == 2


def test_a_batch_of_20_audits_ends_with_counts_that_add_up_and_one_batch_completed(audit_stack, auditor):
    from datetime import date, timedelta

    from batches.models import Batch
    from fiches.simulator import data as crm_data
    from products.services import product_create

    crm, stt, llm, pusher, start = audit_stack
    start("aud9")
    fiche_ids, produits, day = [], set(), date(2026, 2, 2)
    while len(fiche_ids) < 18:  # the CRM simulator's first 18 sales with recordings
        for i in range(crm_data.sales_count(day, seed=42, fiches_per_day=6)):
            fiche = crm_data.fiche_details(crm_data.fiche_id_for(day, i), seed=42, fiches_per_day=6, revision=0)
            info = fiche["fiche"]["information"]
            if fiche["fiche"].get("recordings") and len(fiche_ids) < 18:
                fiche_ids.append(info["fiche_id"])
                produits.add(info["produit"])
        day += timedelta(days=1)
    # No config named: each fiche's product picks it; one product has none (its fiches fail at once).
    unconfigured = "Obsèques Tranquillité"
    for n, produit in enumerate(sorted(produits - {unconfigured})):
        product_create(data={"name": produit, "code": f"p{n}", "audit_config_ids": [config_id()]})
    expected_unconfigured = sum(
        crm_data.fiche_details(f, seed=42, fiches_per_day=6, revision=0)["fiche"]["information"]["produit"]
        == unconfigured
        for f in fiche_ids
    )
    fiche_ids += ["2226004", "9999999"]  # a sale without recordings; a fiche the CRM does not know
    response = post(auditor, "/api/audits/batch", {"fiche_ids": fiche_ids})
    assert response.status_code == 202, response.content
    batch_id = response.json()["batch_id"]
    batch = wait_for(
        lambda: (b := Batch.objects.get(pk=batch_id)).status == "completed" and b,
        timeout=240,
        interval=0.5,
        message="the batch to end",
    )
    assert batch.total == 20 and batch.completed + batch.failed == 20
    assert batch.failed == expected_unconfigured + 2
    audits = Audit.objects.filter(batch_id=batch_id)
    assert audits.filter(status="completed").count() == batch.completed
    # Whole on the requester's own channel; every other user (the global channel) gets ids only.
    completed = pusher_events(pusher, f"private-user-{auditor.pk}", "batch.completed")
    assert len(completed) == 1
    assert {k: completed[0][1][k] for k in ("operation_type", "total", "completed", "failed")} == {
        "operation_type": "audit",
        "total": 20,
        "completed": batch.completed,
        "failed": batch.failed,
    }
    progress = pusher_events(pusher, f"private-user-{auditor.pk}", "batch.progress")
    assert len(progress) == 20 and progress[-1][1]["progress_percentage"] == 100
    assert [p for _, p in pusher_events(pusher, "private-global", "batch.completed")] == [
        {"batch_id": batch_id, "redacted": True}
    ]
    status = client_for(auditor).get(f"/api/batches/{batch_id}").json()
    assert (status["status"], status["completed"], status["failed"]) == ("completed", batch.completed, batch.failed)
