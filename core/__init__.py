"""The workflow kernel: what every run of the house stands on, and nothing domain-specific.

Every workflow (a progressive fetch job, a transcription run, an audit, a batch, an automation run) has
one rhythm: its work is dispatched after the commit that made it, units are claimed, each unit's
outcome goes to a serialized updater, the run ends exactly once, and a reconciler re-drives what
stalls. A new workflow writes only its domain steps on these pieces:

- ``core.runs.TrackedRun``: the lifecycle columns and ``end_once`` (the conditional update that ends a
  run exactly once);
- ``core.dispatch.dispatch_on_commit``: send a task after commit; a broker failure is logged, never
  raised (the reconciler re-drives);
- ``core.inbox``: a unit's outcome to its run's updater (Redis pending list + Redis lock, applied inline
  when the lock is free, else the durable ``core.tasks.apply_outcome``);
- ``core.reconcile.Reconciler``: every run ends (deadline without progress, lost end, stall → re-drive);
- ``core.hooks.FinishHooks``: tell waiters (other workflows) that a run ended, after its commit;
- ``core.leases``: short claim and slot leases renewed by a heartbeat while the work runs;
- ``core.limits`` (Redis semaphores, rate limits, per-user throttles and spending budgets),
  ``core.locks`` (Redis locks: the filter in front of row locks), ``core.retry`` (the error budget,
  waits that are not errors, ``INFRA_RETRY``), ``core.redis``, ``core.exceptions`` (the errors every
  app raises), and small shared pieces (``core.formats``, ``core.fields``, ``core.pagination``...).

``core`` imports no domain app.
"""
