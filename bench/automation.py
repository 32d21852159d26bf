"""P8 ``automation``: one automation run over ~300 fiches of the CRM simulator (20 sales a day), on
workers laid out as in the Procfile, at default settings, with simulated latencies: CRM 50 ms a
request, speech-to-text 1 s a recording (cap ``ELEVENLABS_MAX_CONCURRENCY``), LLM 200 ms a call (cap
``LLM_MAX_CONCURRENCY``), a one-step audit config. The run revalidates its range, fetches each fiche's
details, transcribes its recordings, audits it, and ends.

Printed beside the wall time: the bound the caps impose (the busiest stage's work over its cap —
stages overlap across fiches — plus one fiche's trip through the other stages), and the
orchestration's own time per fiche (the same selection again with transcription and audits off and
everything cached: fetch, guardrails, outcome, counts, events).
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from accounts.models import Role, RolePermission, User
from audits.defaults import DEFAULT_CONFIG
from audits.services.configs import config_create
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from automation.services.runs import run_create
from bench.audits import _Stack
from fiches.simulator import data as crm_data
from fiches.simulator.server import CrmSimulator, SimulatorConfig

FICHES_PER_DAY = 20
TARGET_FICHES = 300
CRM_LATENCY_S, STT_LATENCY_S, LLM_LATENCY_S = 0.05, 1.0, 0.2


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE automation_run_fiche_results, automation_runs, automation_schedules, audits, audit_configs, "
            "transcriptions, transcription_runs, batch_items, batches, recordings, fiche_cache_details, "
            "fiche_cache_mail_devis, fiche_cache, fiche_sales_dates, webhook_deliveries CASCADE"
        )


def _range_with(n: int) -> tuple[date, date, int, int]:
    """The first days from 2026-02-02 holding ``n`` sales; their sales and recordings counts."""
    start = day = date(2026, 2, 2)
    sales = recordings = 0
    while sales < n:
        for sale in crm_data.sales_for_date(
            day, seed=42, fiches_per_day=FICHES_PER_DAY, revision=0, include_recordings=True
        ):
            sales += 1
            recordings += len(sale.get("recordings") or [])
        day += timedelta(days=1)
    return start, day - timedelta(days=1), sales, recordings


def _wait(run_id: str, timeout: float = 1800) -> tuple[AutomationRun, float]:
    started = time.perf_counter()
    while True:
        run = AutomationRun.objects.get(pk=run_id)
        if run.is_terminal:
            return run, time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"run {run_id} did not end")
        time.sleep(0.05)


def _owner() -> User:
    """A run acts for its schedule's owner: one who may read fiches, transcribe and audit them all."""
    role, _ = Role.objects.get_or_create(key="bench-automation", defaults={"name": "Bench automation"})
    for key in ("fiches", "transcriptions", "audits"):
        RolePermission.objects.update_or_create(
            role=role, permission_key=key, defaults={"can_read": True, "can_write": True, "scope": "ALL"}
        )
    user = User.objects.filter(email="bench-automation@example.com").first() or User.objects.create_user(
        email="bench-automation@example.com", password="bench-password-2026"
    )
    user.roles.add(role)
    return user


def run(args: Any) -> None:
    _truncate()
    start, end, sales, recordings = _range_with(TARGET_FICHES)
    step = next(s for s in DEFAULT_CONFIG["steps"] if s["name"] == "Droit de rétractation")
    config = config_create(data={**DEFAULT_CONFIG, "name": "bench: 1 step", "steps": [step]})
    crm = CrmSimulator(
        SimulatorConfig(seed=42, fiches_per_day=FICHES_PER_DAY, latency_ms=int(CRM_LATENCY_S * 1000))
    ).start()
    settings.CRM_BASE_URL = crm.url
    try:
        with _Stack(extra_env={"CRM_BASE_URL": crm.url}) as stack:
            stack.stt.config.latency_ms = int(STT_LATENCY_S * 1000)
            stack.knobs(latency_ms=int(LLM_LATENCY_S * 1000))
            schedule = AutomationSchedule.objects.create(
                name="bench P8",
                owner=_owner(),
                fiche_selection={"mode": "dateRange", "start_date": start.isoformat(), "end_date": end.isoformat()},
                audit_config_ids=[config.pk],
                notify_on_error=False,
            )
            began = time.time()
            automation_run = run_create(schedule=schedule)
            assert automation_run is not None
            done, wall = _wait(str(automation_run.pk))
            average_stt = stack.stt.average_in_flight(admitted_only=True)
            calls = stack.llm_calls()
            stt_calls = [r for r in stack.stt.requests() if r["path"] == "/v1/speech-to-text"]
            peak_stt = stack.stt.max_in_flight()
            # Orchestration alone: the same fiches, nothing to transcribe or audit, details cached.
            schedule.run_transcription, schedule.run_audits = False, False
            schedule.save()
            bare, bare_wall = _wait(str(run_create(schedule=schedule).pk))
    finally:
        crm.stop()
    results = AutomationRunFicheResult.objects.filter(run=done)
    with_recordings = results.exclude(recordings_count=0).count()
    transcribed = len(stt_calls)
    stt_bound = transcribed * STT_LATENCY_S / settings.ELEVENLABS_MAX_CONCURRENCY
    llm_bound = len(calls) * LLM_LATENCY_S / settings.LLM_MAX_CONCURRENCY
    crm_bound = done.total_fiches * CRM_LATENCY_S / 4  # the prefork worker's 4 slots fetch details
    trip = CRM_LATENCY_S * 2 + STT_LATENCY_S + LLM_LATENCY_S  # the sales search, a fetch, a call, a step
    bound = max(stt_bound, llm_bound, crm_bound) + trip
    print(
        f"\n== automation run (P8): {done.total_fiches} fiches of {start}..{end} ({sales} sales, {recordings} "
        f"recordings), latencies CRM {CRM_LATENCY_S * 1000:.0f} ms, STT {STT_LATENCY_S:g} s (cap "
        f"{settings.ELEVENLABS_MAX_CONCURRENCY}), LLM {LLM_LATENCY_S * 1000:.0f} ms "
        f"(cap {settings.LLM_MAX_CONCURRENCY}) =="
    )
    print(
        f"run {done.status}: {done.successful} successful, {done.failed} failed, {done.ignored} ignored "
        f"({with_recordings} with recordings); {transcribed} speech-to-text calls (peak in flight {peak_stt}), "
        f"{len(calls)} LLM calls"
    )
    print(
        f"wall {wall:.1f} s   bound {bound:.1f} s (busiest stage: speech-to-text {stt_bound:.1f} s, LLM "
        f"{llm_bound:.1f} s, CRM details {crm_bound:.1f} s; + one fiche's trip {trip:.2f} s)   ratio "
        f"{wall / bound:.3f}  target <= 1.25  [{'OK' if wall <= 1.25 * bound else 'BELOW TARGET'}]"
    )
    stt_mean = sum(c["end"] - c["start"] for c in stt_calls) / len(stt_calls)
    paced = max(transcribed * stt_mean / settings.ELEVENLABS_MAX_CONCURRENCY, llm_bound, crm_bound) + trip
    first_stt = min(c["start"] for c in stt_calls) - began
    last_stt = max(c["end"] for c in stt_calls) - began
    print(
        f"speech-to-text calls from {first_stt:.1f} s to {last_stt:.1f} s after the request, {average_stt:.2f} in "
        f"flight on average while work remained; LLM calls from "
        f"{min(c['start'] for c in calls) - began:.1f} s to {max(c['end'] for c in calls) - began:.1f} s"
    )
    print(
        f"the speech-to-text simulator took {stt_mean:.3f} s per call on average (its {STT_LATENCY_S:g} s plus "
        f"building a transcript, in this process): bound at that pace {paced:.1f} s, ratio {wall / paced:.3f}"
    )
    print(
        f"orchestration alone (same {bare.total_fiches} fiches, details cached, no transcription or audit): "
        f"{bare_wall:.2f} s, {bare_wall / max(1, bare.total_fiches) * 1000:.1f} ms per fiche ({bare.status})"
    )
