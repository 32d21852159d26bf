"""Transcription benchmarks.

- P5 ``transcription_fanout``: 200 recordings, each taking 1 s at the speech-to-text simulator,
  under the default provider cap (``ELEVENLABS_MAX_CONCURRENCY`` = 10), on workers laid out as in
  the Procfile (prefork ``default,crm``; threads ``stt_high,stt,stt_low``). Wall time from the first
  request to the last run's end, beside the ideal (200 x 1 s / 10 = 20 s; target <= 1.1 x), and
  the simulator's view of the cap: the most calls ever in flight (never above 10) and the average
  in flight while work remained (target >= 9).
- ``timeline``: building a fiche's turns and chunks from 4 recordings x 30 minutes of words
  (target <= 50 ms), beside the floor of reading the same words once.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from bench import support
from fiches.models import FicheCache
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.simulator import data as crm_data
from privacy.redaction import redact_words
from transcriptions.models import TranscriptionRun
from transcriptions.services.runs import transcription_request
from transcriptions.simulator.script import transcript_for
from transcriptions.simulator.server import SttSimulator, SttSimulatorConfig
from transcriptions.timeline import build_turns, chunk_turns, map_speakers


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE transcriptions, transcription_runs, batch_items, batches, recordings, fiche_cache_details, "
            "fiche_cache_mail_devis, fiche_cache, fiche_sales_dates CASCADE"
        )


def _fiches_with_recordings(count: int) -> list[str]:
    """Cache CRM-simulator sales until ``count`` recordings are held; returns their fiche ids."""
    day, held, ids = date(2026, 2, 2), 0, []
    while held < count:
        sales = crm_data.sales_for_date(day, seed=42, fiches_per_day=20, revision=0, include_recordings=True)
        keep = []
        for sale in sales:
            if not sale["recordings"] or held >= count:
                continue
            sale["recordings"] = sale["recordings"][: count - held]
            held += len(sale["recordings"])
            keep.append(sale)
            ids.append(sale["fiche_id"])
        cache_fiche_sales_summaries(keep, revalidated_at=datetime.now(UTC), covered_dates=[day])
        day += timedelta(days=1)
    FicheCache.objects.filter(fiche_id__in=ids).update(details_fetched_at=datetime.now(UTC))  # no CRM call needed
    return ids


def transcription_fanout(args: Any) -> None:
    _truncate()
    n, latency, cap = 200, 1.0, settings.ELEVENLABS_MAX_CONCURRENCY
    fiche_ids = _fiches_with_recordings(n)
    with SttSimulator(SttSimulatorConfig(seed=42, crm_seed=42, latency_ms=int(latency * 1000))) as stt:
        env = support.child_env(
            DATABASE_URL=support.database_url(), ELEVENLABS_BASE_URL=stt.url, ELEVENLABS_API_KEY="bench-key"
        )
        workers = [
            support.start_worker(env, name="worker", concurrency=4, queues="default,crm"),
            support.start_worker(env, name="stt", concurrency=16, queues="stt_high,stt,stt_low", pool="threads"),
        ]
        try:
            settings.ELEVENLABS_API_KEY = "bench-key"
            started_at = time.time()
            started = time.perf_counter()
            run_ids = []
            for fiche in FicheCache.objects.filter(fiche_id__in=fiche_ids):
                result = transcription_request(fiche=fiche)
                assert result.run_id, result
                run_ids.append(result.run_id)
            while TranscriptionRun.objects.filter(pk__in=run_ids, completed_at__isnull=True).exists():
                if time.perf_counter() - started > 600:
                    raise RuntimeError("the runs did not end")
                time.sleep(0.05)
            wall = time.perf_counter() - started
            ended_at = time.time()
        finally:
            for worker in workers:
                worker.stop()
        statuses = sorted(set(TranscriptionRun.objects.filter(pk__in=run_ids).values_list("status", flat=True)))
        calls = [r for r in stt.requests() if r["path"] == "/v1/speech-to-text"]
        peak = stt.max_in_flight()
        average = stt.average_in_flight(admitted_only=True)
        rejected = sum(stt.rejected().values())
        vendor_mean = statistics.mean(c["end"] - c["start"] for c in calls)
        lead = min(c["start"] for c in calls) - started_at
        tail = ended_at - max(c["end"] for c in calls)
    ideal = n * latency / cap
    ok = wall <= 1.1 * ideal and peak <= cap and average >= 0.9 * cap and statuses == ["completed"]
    print(f"\n== transcription fan-out (P5): {n} recordings, {latency:g} s each, cap {cap}, {len(fiche_ids)} fiches ==")
    measured_ideal = n * vendor_mean / cap
    print(f"wall {wall:6.2f} s  ideal {ideal:.2f} s (items x latency / cap)  ratio {wall / ideal:.3f}  target <= 1.10")
    print(
        f"the simulator took {vendor_mean:.3f} s per call on average (its 1 s plus building the transcript): "
        f"ideal at that pace {measured_ideal:.2f} s, ratio {wall / measured_ideal:.3f}"
    )
    print(
        f"simulator: {len(calls)} calls, peak in flight {peak} (cap {cap}), average in flight {average:.2f} "
        f"while work remained (target >= {0.9 * cap:g}), 429s {rejected}, runs {statuses}; first call after "
        f"{lead:.2f} s, last ended {tail:.2f} s before the end  "
        f"[{'OK' if ok else 'BELOW TARGET'}]"
    )


def timeline(args: Any) -> None:
    recordings = []
    for n in range(4):
        call_id = f"c-bench-{n}"
        body = transcript_for(call_id, seed=n)
        # Stretch each call to 30 minutes of speech: repeat its words with shifted times.
        words, offset = [], 0.0
        while offset < 1800:
            for word in body["words"]:
                words.append({**word, "start": word["start"] + offset, "end": word["end"] + offset})
            offset += body["audio_duration_secs"]
        words = [w for w in words if w["start"] < 1800]
        speaker_map = map_speakers(body["words"], direction="outbound", agent_name=None)
        recordings.append(
            {
                "call_id": call_id,
                "started_at": datetime(2026, 2, 2, 9 + n, tzinfo=UTC),
                "words": words,
                "speaker_map": speaker_map,
            }
        )
    items = sum(len(r["words"]) for r in recordings)
    builds, floors = [], []
    for _ in range(max(5, getattr(args, "repeat", 3) * 5)):
        t0 = time.perf_counter()
        turns = build_turns(recordings)
        chunks = chunk_turns(turns)
        builds.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for r in recordings:
            for w in r["words"]:
                _ = w["text"]
        floors.append((time.perf_counter() - t0) * 1000)
    build, floor = statistics.median(builds), statistics.median(floors)
    print(
        f"\n== timeline build: 4 recordings x 30 min ({items} word and spacing items, {len(turns)} turns, "
        f"{len(chunks)} chunks) =="
    )
    print(
        f"median {build:.1f} ms (target <= 50 ms)  floor: one pass over the words {floor:.1f} ms  "
        f"[{'OK' if build <= 50 else 'BELOW TARGET'}]"
    )
    # The redacted timeline (what the LLM reads with LLM_REDACT_PII, and readers without the write grant):
    # the same build after redact_words over each recording (cached like the clear one once built).
    redacted_builds = []
    for _ in range(3):
        t0 = time.perf_counter()
        turns = build_turns([{**r, "words": redact_words(r["words"])} for r in recordings])
        chunk_turns(turns)
        redacted_builds.append((time.perf_counter() - t0) * 1000)
    print(
        f"redacted build (every kind of personal data): median {statistics.median(redacted_builds):.0f} ms, "
        f"{statistics.median(redacted_builds) - build:.0f} ms more than the clear build (built once per change of "
        f"the fiche's transcripts, then cached)"
    )
