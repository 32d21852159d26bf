"""``manage.py revalidate_date DATE [--end DATE] [--async]``: in-process (``call_command``) and as a
real subprocess for its exit codes (0 ok, 1 a chunk or the CRM failed, 2 bad input).

The subprocess talks to the session's CRM simulator over HTTP, to the test database (hence
transactional tests where it writes: its commits must be visible here and flushed afterwards) and
to the test Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection

from fiches.models import FicheCache, SalesDateState
from fiches.selectors import date_range_coverage, dates_between
from tests.fiches.conftest import crm_calls
from tests.support import queued_tasks

BASE_DIR = Path(__file__).resolve().parents[2]
START, END = date(2026, 2, 2), date(2026, 2, 13)  # 12 days: chunks 02..06, 07..11, 12..13


@pytest.fixture(autouse=True)
def _no_crm_rate_limit(settings):
    settings.CRM_RATE_LIMIT = "off"


def sales_calls(simulator) -> list[tuple[str, str]]:
    return [(c["params"]["startDate"], c["params"]["endDate"]) for c in crm_calls(simulator, sales=True)]


def expected_sales(sim_data, days) -> list[dict]:
    return [s for day in days for s in sim_data.sales(day)]


def database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{quote(s['NAME'], safe='')}"


def run_command(*args: str, crm_url: str = "http://127.0.0.1:9") -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DATABASE_URL": database_url(),
        "TEST_REDIS_URL": django_settings.REDIS_URL,
        "CRM_BASE_URL": crm_url,
        "CRM_RATE_LIMIT": "off",
        "CRM_TIMEOUT_SECONDS": "5",
        "FICHE_SALES_INCLUDE_RECORDINGS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "revalidate_date", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- In process (call_command) ---------------------------------------------------------------------


@pytest.mark.django_db
def test_command_revalidates_a_range_in_one_call(crm, sim_data):
    out = StringIO()
    call_command("revalidate_date", "2026-02-05", "--end", "2026-02-09", stdout=out)

    days = dates_between(date(2026, 2, 5), date(2026, 2, 9))
    n = len(expected_sales(sim_data, days))
    assert out.getvalue().splitlines() == [
        "revalidating 2026-02-05..2026-02-09 (5 day(s))",
        f"  2026-02-05..2026-02-09: ok, {n} fiches",
        f"done: mode=range chunks ok=1 failed=0 fiches={n} dates covered=5/5",
    ]
    assert sales_calls(crm) == [("2026-02-05", "2026-02-09")]
    assert date_range_coverage(days[0], days[-1]).complete


@pytest.mark.django_db
def test_command_single_date(crm, sim_data):
    out = StringIO()
    call_command("revalidate_date", "2026-02-03", stdout=out)
    n = len(sim_data.sales(date(2026, 2, 3)))
    assert out.getvalue().splitlines()[-1] == f"done: mode=range chunks ok=1 failed=0 fiches={n} dates covered=1/1"
    assert sales_calls(crm) == [("2026-02-03", "2026-02-03")]


@pytest.mark.django_db
def test_command_prints_one_line_per_chunk_on_fallback(crm, sim_data):
    crm.config.update({"max_range_days": 5})
    out = StringIO()
    call_command("revalidate_date", START.isoformat(), "--end", END.isoformat(), stdout=out)

    chunks = [
        (date(2026, 2, 2), date(2026, 2, 6)),
        (date(2026, 2, 7), date(2026, 2, 11)),
        (date(2026, 2, 12), date(2026, 2, 13)),
    ]
    counts = [len(expected_sales(sim_data, dates_between(a, b))) for a, b in chunks]
    assert out.getvalue().splitlines() == [
        "revalidating 2026-02-02..2026-02-13 (12 day(s))",
        *(f"  {a}..{b}: ok, {n} fiches" for (a, b), n in zip(chunks, counts, strict=True)),
        f"done: mode=chunks chunks ok=3 failed=0 fiches={sum(counts)} dates covered=12/12",
    ]


@pytest.mark.django_db
def test_command_failing_chunk_is_a_command_error_with_exit_code_1(crm):
    crm.config.update({"fail_dates": ["2026-02-09"]})
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("revalidate_date", START.isoformat(), "--end", END.isoformat(), stdout=out)

    assert info.value.returncode == 1
    assert "1 chunk(s) failed" in str(info.value)
    lines = out.getvalue().splitlines()
    assert lines[2].startswith("  2026-02-07..2026-02-11: FAILED: ") and "503" in lines[2]
    assert lines[-1].startswith("done: mode=chunks chunks ok=2 failed=1 ") and lines[-1].endswith("dates covered=7/12")


@pytest.mark.django_db
def test_command_permanent_crm_error_exits_1(crm, settings):
    crm.config.update({"api_key": "the-right-key"})  # we send none: 401, a permanent error
    with pytest.raises(CommandError) as info:
        call_command("revalidate_date", "2026-02-03", stdout=StringIO())
    assert info.value.returncode == 1
    assert str(info.value).startswith("CRM error: ") and "401" in str(info.value)
    assert len(sales_calls(crm)) == 1  # a permanent error is not retried in chunks


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2026-02-30"], "date must be a date as YYYY-MM-DD, got '2026-02-30'"),
        (["2026-2-1"], "date must be a date as YYYY-MM-DD, got '2026-2-1'"),
        (["20260201"], "date must be a date as YYYY-MM-DD, got '20260201'"),
        (["2026-02-01", "--end", "2026-13-01"], "--end must be a date as YYYY-MM-DD, got '2026-13-01'"),
        (["2026-02-05", "--end", "2026-02-04"], "endDate must be on or after startDate."),
        (["2024-01-01", "--end", "2026-02-04"], "at most 366 are allowed"),
    ],
)
def test_command_bad_input_is_a_command_error_with_exit_code_2(args, message):
    with pytest.raises(CommandError) as info:
        call_command("revalidate_date", *args, stdout=StringIO())
    assert info.value.returncode == 2
    assert message in str(info.value)


# --- As a subprocess (real exit codes) -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_subprocess_success_prints_chunks_and_summary_and_exits_0(crm, sim_data):
    crm.config.update({"max_range_days": 5})

    result = run_command(START.isoformat(), "--end", END.isoformat(), crm_url=crm.url)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    n = len(expected_sales(sim_data, dates_between(START, END)))
    assert lines[0] == "revalidating 2026-02-02..2026-02-13 (12 day(s))"
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "  2026-02-02..2026-02-06",
        "  2026-02-07..2026-02-11",
        "  2026-02-12..2026-02-13",
    ]
    assert all(": ok, " in line for line in lines[1:4])
    assert lines[-1] == f"done: mode=chunks chunks ok=3 failed=0 fiches={n} dates covered=12/12"
    assert "Traceback" not in result.stderr and "CommandError" not in result.stderr
    assert sales_calls(crm) == [
        ("2026-02-02", "2026-02-13"),
        ("2026-02-02", "2026-02-06"),
        ("2026-02-07", "2026-02-11"),
        ("2026-02-12", "2026-02-13"),
    ]
    # the subprocess's writes are in the test database
    assert FicheCache.objects.filter(sales_date__range=(START, END)).count() == n
    assert date_range_coverage(START, END).complete


@pytest.mark.django_db(transaction=True)
def test_subprocess_failing_chunk_exits_1(crm):
    crm.config.update({"fail_dates": ["2026-02-09"]})

    result = run_command(START.isoformat(), "--end", END.isoformat(), crm_url=crm.url)

    assert result.returncode == 1
    assert "1 chunk(s) failed" in result.stderr
    assert "  2026-02-07..2026-02-11: FAILED: " in result.stdout
    assert "done: mode=chunks chunks ok=2 failed=1" in result.stdout
    coverage = date_range_coverage(START, END)
    assert coverage.missing == dates_between(date(2026, 2, 7), date(2026, 2, 11))
    errors = SalesDateState.objects.filter(last_error__isnull=False).values_list("sales_date", flat=True)
    assert sorted(errors) == coverage.missing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2026-02-30"], "date must be a date as YYYY-MM-DD, got '2026-02-30'"),
        (["2026-2-1"], "date must be a date as YYYY-MM-DD, got '2026-2-1'"),
        (["2026-02-05", "--end", "2026-02-04"], "endDate must be on or after startDate."),
    ],
)
def test_subprocess_bad_input_exits_2_with_a_message_on_stderr(args, message):
    result = run_command(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_subprocess_async_prints_the_task_id_and_exits_0(crm):
    result = run_command("2026-02-02", "--end", "2026-02-04", "--async", crm_url=crm.url)

    assert result.returncode == 0, result.stderr
    words = result.stdout.strip().split()
    assert words[0] == "queued" and words[2:] == ["for", "2026-02-02..2026-02-04"]
    task_id = words[1]
    assert [(t.name, t.args, t.id) for t in queued_tasks("crm")] == [
        ("fiches.tasks.crm.cache_sales_list", ["2026-02-02", "2026-02-04"], task_id)
    ]
    assert crm.requests() == []  # nothing ran inline
