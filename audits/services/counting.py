"""What changes which audit counts for a fiche and config, or its figures, told to whoever keeps figures
derived from it (the analytics facts) without importing them.

``audit_counting_changed`` fires, after the commit, with a ``CountingChange``: an audit of the fiche ended,
was reviewed or rerun (its verdicts and score changed), or a pin moved (``fiche_id`` set); or the config's
active version changed (``fiche_id`` None: every fiche of the config). Listeners have their own reconciler.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.hooks import FinishHooks


@dataclass(frozen=True)
class CountingChange:
    config_id: int
    fiche_id: int | None = None  # the fiche's pk; None: every fiche of the config


audit_counting_changed: FinishHooks[CountingChange] = FinishHooks("audit_counting_changed")
on_counting_changed = audit_counting_changed.register


def counting_changed(*, config_id: int, fiche_id: int | None = None) -> None:
    audit_counting_changed.fire(CountingChange(config_id=config_id, fiche_id=fiche_id))
