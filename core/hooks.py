"""Finish hooks: what one workflow tells the others when one of its runs ends, without importing them.

A workflow that others wait for (a transcription run: the audits and automation fiches waiting for the
fiche's transcripts) owns a ``FinishHooks``; the waiters register a callable in their
``AppConfig.ready``; the workflow calls ``fire(obj)`` in the transaction that ended the run, and each
hook runs once after that commit. A hook that raises is logged and does not undo the end: the waiter
has its own reconciler.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

logger = logging.getLogger("core.hooks")


class FinishHooks[T]:
    def __init__(self, name: str) -> None:
        self.name = name
        self._hooks: list[Callable[[T], Any]] = []

    def register(self, hook: Callable[[T], Any]) -> None:
        """Call ``hook(obj)`` after the commit that ended each run (registering twice is a no-op)."""
        if hook not in self._hooks:
            self._hooks.append(hook)

    def fire(self, obj: T) -> None:
        """Run every hook with ``obj`` once the current transaction commits (at once outside one)."""
        for hook in list(self._hooks):
            transaction.on_commit(functools.partial(self._call, hook, obj))

    def _call(self, hook: Callable[[T], Any], obj: T) -> None:
        try:
            hook(obj)
        except Exception:  # a listener must not undo the end; it has its own reconciler
            logger.exception("finish_hook_failed", extra={"hooks": self.name, "hook": getattr(hook, "__name__", "?")})
