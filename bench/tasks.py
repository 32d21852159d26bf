"""Tasks of the benchmarks only (loaded by the bench's workers with ``--include bench.tasks``)."""

from celery import shared_task


@shared_task(name="bench.noop", ignore_result=False)
def noop(n: int = 0) -> int:
    return n


@shared_task(name="bench.noop_body", ignore_result=False)
def noop_body(results: list | None = None) -> int:
    return len(results or [])
