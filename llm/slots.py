"""The global cap on LLM calls in flight (``LLM_MAX_CONCURRENCY``, a Redis semaphore shared by every
worker and web process): audit steps and reruns hold a slot for their call, chats for their stream
(chats also hold one of their own, fewer, so audits keep a reserved share: ``chat.services``). Slots
are short leases renewed by a heartbeat while the call runs (``core.leases``): a dead holder frees its
slot within ``CLAIM_LEASE_SECONDS``."""

from __future__ import annotations

from django.conf import settings

from core.limits import Semaphore


def llm_semaphore() -> Semaphore:
    return Semaphore("llm-calls", limit=settings.LLM_MAX_CONCURRENCY, lease_seconds=settings.CLAIM_LEASE_SECONDS)
