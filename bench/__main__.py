"""``python -m bench [NAME ...]``: run benchmarks against a dedicated database.

The database is ``BENCH_DATABASE_URL`` (default: ``callcentre_bench`` on the local Postgres); it is
created and migrated when missing, and its tables are emptied by the benchmarks. Redis is
``BENCH_REDIS_URL`` (default: database 10 of the local Redis), flushed by the benchmarks.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/callcentre_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"


def main() -> None:
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    # Its own Redis database too (the benchmarks flush it), never the one a running system uses.
    os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Production-like settings, shared with the servers and workers the benchmarks start.
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")  # the benchmarks talk plain HTTP on 127.0.0.1
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 40)
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
    from core.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from bench import analytics, audits, automation, cache_write, evidence, jobs, pii, review_queues, transcriptions

    benchmarks = {
        "cache_write": cache_write.run,
        "range_read": jobs.range_read,
        "orchestration": jobs.orchestration,
        "polling": jobs.polling,
        "transcription_fanout": transcriptions.transcription_fanout,
        "timeline": transcriptions.timeline,
        "evidence_gate": evidence.run,
        "audit_fanout": audits.audit_fanout,
        "audit_tokens": audits.audit_tokens,
        "automation": automation.run,
        "review_queues": review_queues.run,
        "analytics": analytics.run,
        "pii": pii.run,
    }
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=list(benchmarks), help="benchmarks to run (default: all)")
    parser.add_argument("--fiches", type=int, default=10_000, help="fiches for cache_write (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median is reported")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk load (default 10)")
    args = parser.parse_args()
    for name in args.names or benchmarks:
        benchmarks[name](args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
