from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The generic kernel every workflow stands on (no domain app imported): tracked-run lifecycle,
    dispatch after commit, outcome inbox, reconcile, finish hooks, leases, limits, locks, retry policy."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"
