"""Audit benchmarks, on workers laid out as in the Procfile (prefork ``default,crm``; threads ``llm``;
threads ``stt_*``), the LLM simulator in its own process (``run_llm_simulator``), default settings.

- P6 ``audit_fanout``: an 8-step audit (the default config without its last step) with 2 s of simulated
  latency per LLM call, the fiche's transcripts already cached, on a 35-minute and a 58-minute fiche.
  Wall time from the request to the audit's end, beside its floor — the prerequisites (request → steps
  fanned out) plus one step's LLM time (the slowest call, as the simulator measured it) — the same
  call replayed alone (the simulator's judge is CPU work in one Python process: 8 calls at once share
  its cores), and the serial sum (every call one after the other). Target: wall <= 1.25 x floor.
- P7 ``audit_tokens``: the same audit in prompt mode (the timeline in every prompt) and in tools mode
  (the model searches the transcript) on a fiche of ~60 minutes of calls; input tokens from each
  step's ``usage``. Target: tools <= 40 % of prompt.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, date, datetime
from typing import Any

import requests
from django.conf import settings
from django.db import connection

from audits.defaults import DEFAULT_CONFIG
from audits.models import Audit, AuditStepResult
from audits.services.configs import config_create
from audits.services.request import audit_request
from bench import support
from fiches.models import FicheCache
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.simulator import data as crm_data
from transcriptions.simulator.server import SttSimulator, SttSimulatorConfig

DAY = date(2026, 2, 3)
LONG_FICHE = "2226000"  # CRM simulator (seed 42, 6 a day): 4 recordings, 58 minutes in all
FICHES = {"2226002": "4 recordings, 35 min", LONG_FICHE: "4 recordings, 58 min"}
LATENCY_S = 2.0


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE audits, audit_configs, transcriptions, transcription_runs, batch_items, batches, recordings, "
            "fiche_cache_details, fiche_cache_mail_devis, fiche_cache, fiche_sales_dates CASCADE"
        )


def _cache_day() -> None:
    sales = crm_data.sales_for_date(DAY, seed=42, fiches_per_day=6, revision=0, include_recordings=True)
    cache_fiche_sales_summaries(sales, revalidated_at=datetime.now(UTC), covered_dates=[DAY])
    FicheCache.objects.update(details_fetched_at=datetime.now(UTC))  # no CRM call needed


class _Stack:
    """The LLM simulator process, the speech-to-text simulator, and the workers (``extra_env`` added
    to theirs)."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}

    def __enter__(self) -> _Stack:
        self.stt = SttSimulator(SttSimulatorConfig(seed=42, crm_seed=42)).start()
        port = support.free_port()
        self.llm_url = f"http://127.0.0.1:{port}"
        env = support.child_env(DATABASE_URL=support.database_url())
        self.sim = support.Proc(
            "llm-simulator", [sys.executable, "manage.py", "run_llm_simulator", "--port", str(port)], env
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{self.llm_url}/__sim__/config", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline or self.sim.process.poll() is not None:
                    log = self.sim.log_path.read_text()[-2000:]
                    raise RuntimeError(f"LLM simulator did not start: {log}") from None
                time.sleep(0.2)
        worker_env = {
            **env,
            "ELEVENLABS_BASE_URL": self.stt.url,
            "ELEVENLABS_API_KEY": "bench-key",
            "LLM_BASE_URL": f"{self.llm_url}/v1",
            "LLM_API_KEY": "bench-key",
            "LLM_MODEL": "sim-judge-1",
            **self.extra_env,
        }
        settings.LLM_API_KEY, settings.LLM_MODEL = "bench-key", "sim-judge-1"
        self.workers = [
            support.start_worker(worker_env, name="worker", concurrency=4, queues="default,crm"),
            support.start_worker(worker_env, name="llm", concurrency=16, queues="llm", pool="threads"),
            support.start_worker(worker_env, name="stt", concurrency=16, queues="stt_high,stt,stt_low", pool="threads"),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        self.sim.stop()
        self.stt.stop()

    def knobs(self, **values: Any) -> None:
        requests.post(f"{self.llm_url}/__sim__/config", json=values, timeout=5).raise_for_status()

    def llm_calls(self) -> list[dict[str, Any]]:
        log = requests.get(f"{self.llm_url}/__sim__/requests", timeout=30).json()
        entries = log["requests"] if isinstance(log, dict) else log
        return [r for r in entries if r["path"] == "/v1/chat/completions"]

    def replay_alone(self, body: dict[str, Any]) -> float:
        """Seconds the simulator takes for one request on its own (the same body, nothing else in flight)."""
        started = time.perf_counter()
        response = requests.post(
            f"{self.llm_url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"}, timeout=60
        )
        response.raise_for_status()
        return time.perf_counter() - started

    def clear(self) -> None:
        requests.delete(f"{self.llm_url}/__sim__/requests", timeout=5).raise_for_status()


def _audit(fiche_id: str, config_id: int, *, tools_mode: bool = False, timeout: float = 600) -> tuple[Audit, float]:
    fiche = FicheCache.objects.get(fiche_id=fiche_id)
    started = time.perf_counter()
    audit = audit_request(fiche=fiche, config_id=config_id, tools_mode=tools_mode)
    while True:
        audit.refresh_from_db()
        if audit.is_terminal:
            wall = time.perf_counter() - started
            break
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"audit {audit.pk} did not end")
        time.sleep(0.02)
    if audit.status != "completed":
        raise RuntimeError(f"audit {audit.pk} {audit.status}: {audit.error}")
    return audit, wall


def _eight_step_config() -> int:
    content = {**DEFAULT_CONFIG, "name": "bench: 8 steps", "steps": DEFAULT_CONFIG["steps"][:8]}
    return config_create(data=content).pk


def audit_fanout(args: Any) -> None:
    _truncate()
    _cache_day()
    config_id = _eight_step_config()
    repeat = max(1, getattr(args, "repeat", 3))
    print(
        f"\n== audit fan-out (P6): 8 steps, {LATENCY_S:g} s per LLM call, transcripts cached, "
        f"LLM_MAX_CONCURRENCY {settings.LLM_MAX_CONCURRENCY}, median of {repeat} =="
    )
    with _Stack() as stack:
        for fiche_id, label in FICHES.items():
            stack.knobs(latency_ms=0)
            _audit(fiche_id, config_id)  # transcribes the fiche: its transcripts are cached from here on
            stack.knobs(latency_ms=int(LATENCY_S * 1000))
            rows = []
            for _ in range(repeat):
                stack.clear()
                audit, wall = _audit(fiche_id, config_id)
                calls = stack.llm_calls()
                assert len(calls) == 8, len(calls)
                prerequisites = (audit.dispatched_at - audit.created_at).total_seconds()
                slowest = max(c["end"] - c["start"] for c in calls)
                serial = sum(c["end"] - c["start"] for c in calls)
                spread = max(c["start"] for c in calls) - min(c["start"] for c in calls)
                alone = stack.replay_alone(max(calls, key=lambda c: c["end"] - c["start"])["body"])
                rows.append((wall, prerequisites, slowest, serial, spread, alone))
            wall, prerequisites, slowest, serial, spread, alone = (
                statistics.median(column) for column in zip(*rows, strict=True)
            )
            floor = prerequisites + slowest
            print(
                f"fiche {fiche_id} ({label}): request -> audit completed {wall:.2f} s; floor {floor:.2f} s "
                f"(prerequisites {prerequisites:.2f} s + the slowest step's LLM call {slowest:.2f} s) ratio "
                f"{wall / floor:.3f} (target <= 1.25) [{'OK' if wall <= 1.25 * floor else 'BELOW TARGET'}]"
            )
            print(
                f"    that call alone takes {alone:.2f} s (the simulator judging a long prompt while 7 others "
                f"run shares its 2 cores): ratio to prerequisites + alone {wall / (prerequisites + alone):.3f}; "
                f"serial sum of the 8 calls {serial:.2f} s ({serial / wall:.1f}x the wall); calls started within "
                f"{spread:.2f} s"
            )


def audit_tokens(args: Any) -> None:
    _truncate()
    _cache_day()
    config_id = _eight_step_config()
    with _Stack():
        _audit(LONG_FICHE, config_id)  # transcripts cached
        results = {}
        for tools_mode in (False, True):
            audit, wall = _audit(LONG_FICHE, config_id, tools_mode=tools_mode)
            steps = AuditStepResult.objects.filter(audit=audit)
            prompt = sum(s.prompt_tokens for s in steps)
            completion = sum(s.completion_tokens for s in steps)
            estimated = any(s.tokens_estimated for s in steps)
            tool_calls = sum(s.tool_calls for s in steps)
            results[tools_mode] = (prompt, completion, estimated, tool_calls, wall, audit)
    minutes = sum(r.duration_seconds or 0 for r in FicheCache.objects.get(fiche_id=LONG_FICHE).recordings.all()) / 60
    (p_prompt, p_completion, p_est, _, p_wall, p_audit) = results[False]
    (t_prompt, t_completion, t_est, t_tools, t_wall, t_audit) = results[True]
    ratio = t_prompt / p_prompt
    print(f"\n== audit input tokens (P7): 8 steps, fiche {LONG_FICHE}, {minutes:.0f} minutes of calls ==")
    print(
        f"prompt mode: {p_prompt} input + {p_completion} output tokens (usage{', estimated' if p_est else ''}), "
        f"{p_wall:.2f} s, niveau {p_audit.niveau}"
    )
    print(
        f"tools mode:  {t_prompt} input + {t_completion} output tokens, {t_tools} tool calls, {t_wall:.2f} s, "
        f"niveau {t_audit.niveau}"
    )
    print(f"tools / prompt input tokens {ratio:.3f}  target <= 0.40  [{'OK' if ratio <= 0.4 else 'BELOW TARGET'}]")
