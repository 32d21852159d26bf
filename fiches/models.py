"""The fiche cache (list rows, full details outside the list row, recordings, per-date state) and
the progressive fetch jobs."""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from core.runs import TrackedRun
from fiches.job_snapshots import job_changed

# Sections of the gateway's ``fiche`` object stored in ``fiche_cache_details`` (one JSON column
# each); ``mail_devis`` lives in its own table and ``recordings`` in ``recordings``.
DETAIL_SECTIONS: tuple[str, ...] = (
    "information",
    "prospect",
    "etiquettes",
    "documents",
    "commentaires",
    "mails",
    "rendez_vous",
    "alertes",
    "enfants",
    "conjoint",
    "reclamations",
    "autres_contrats",
    "raw_sections",
    "elements_souscription",
    "tarification",
)

# What an erased fiche keeps of the CRM's data (``privacy.erasure``): the sale, not the person. The keys of
# ``raw_data`` and of the details' ``information`` outside this list are dropped, on erasure and on every later
# fetch or revalidation of the fiche (``fiches.services.cache``).
ERASED_FICHE_KEEPS: frozenset[str] = frozenset(
    {
        "fiche_id",
        "cle",
        "sales_date",
        "groupe",
        "crm_user_id",
        "agent_name",
        "statut",
        "produit",
        "date_creation",
        "date_modification",
    }
)


class FicheCache(models.Model):
    """One cached fiche. Narrow on purpose: range reads only touch this table."""

    fiche_id = models.CharField(max_length=64, unique=True)
    cle = models.CharField(max_length=64, null=True, blank=True)
    sales_date = models.DateField(help_text="Source of truth for date coverage.")
    groupe = models.CharField(max_length=128, null=True, blank=True)
    crm_user_id = models.CharField(max_length=64, null=True, blank=True)
    agent_name = models.CharField(max_length=255, null=True, blank=True)
    prospect_nom = models.CharField(max_length=255, null=True, blank=True)
    prospect_prenom = models.CharField(max_length=255, null=True, blank=True)
    statut = models.CharField(max_length=128, null=True, blank=True)
    produit = models.CharField(max_length=255, null=True, blank=True)
    raw_data = models.JSONField(
        default=dict,
        help_text="The sales-list item with _salesListOnly=true while only the sales list is known; "
        "after a details fetch, the fiche keys no dedicated table holds.",
    )
    details_success = models.BooleanField(null=True)
    details_message = models.CharField(max_length=255, null=True, blank=True)
    details_fetched_at = models.DateTimeField(null=True, blank=True)
    last_revalidated_at = models.DateTimeField(null=True, blank=True)
    recordings_count = models.PositiveIntegerField(default=0)
    has_recordings = models.BooleanField(default=False)
    erased_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The prospect's personal data was erased on request (privacy): a later fetch or revalidation "
        "stores the sale's columns only.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "fiche_cache"
        verbose_name = "cached fiche"
        indexes = [
            models.Index(fields=["sales_date", "fiche_id"], name="fiche_cache_date_id"),
            models.Index(fields=["groupe", "sales_date"], name="fiche_cache_group_date"),
            models.Index(fields=["crm_user_id", "sales_date"], name="fiche_cache_user_date"),
        ]

    def __str__(self) -> str:
        return self.fiche_id

    @property
    def has_details(self) -> bool:
        return self.details_fetched_at is not None

    @property
    def prospect_name(self) -> str:
        return " ".join(p for p in (self.prospect_prenom, self.prospect_nom) if p)


class FicheCacheDetails(models.Model):
    """The full details sections of a fiche, one JSON column per section of the contract."""

    fiche = models.OneToOneField(FicheCache, on_delete=models.CASCADE, primary_key=True, related_name="details")
    information = models.JSONField(default=dict)
    prospect = models.JSONField(null=True, blank=True)
    etiquettes = models.JSONField(null=True, blank=True)
    documents = models.JSONField(null=True, blank=True)
    commentaires = models.JSONField(null=True, blank=True)
    mails = models.JSONField(null=True, blank=True)
    rendez_vous = models.JSONField(null=True, blank=True)
    alertes = models.JSONField(null=True, blank=True)
    enfants = models.JSONField(null=True, blank=True)
    conjoint = models.JSONField(null=True, blank=True)
    reclamations = models.JSONField(null=True, blank=True)
    autres_contrats = models.JSONField(null=True, blank=True)
    raw_sections = models.JSONField(null=True, blank=True)
    elements_souscription = models.JSONField(null=True, blank=True)
    tarification = models.JSONField(null=True, blank=True)
    present_sections = models.JSONField(
        default=list, help_text="Which sections the gateway sent, in order (to rebuild its exact shape)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "fiche_cache_details"
        verbose_name_plural = "fiche cache details"

    def __str__(self) -> str:
        return f"details of {self.fiche_id}"


class FicheCacheMailDevis(models.Model):
    """``mail_devis`` (large: tens of KB), loaded only when asked for."""

    fiche = models.OneToOneField(FicheCache, on_delete=models.CASCADE, primary_key=True, related_name="mail_devis")
    content = models.JSONField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "fiche_cache_mail_devis"
        verbose_name_plural = "fiche cache mail devis"

    def __str__(self) -> str:
        return f"mail devis of {self.fiche_id}"


class Recording(models.Model):
    """A call recording. Caching is additive: a sales-list refresh never deletes one."""

    call_id = models.CharField(max_length=128, unique=True)
    fiche = models.ForeignKey(FicheCache, on_delete=models.CASCADE, related_name="recordings")
    recording_url = models.TextField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    direction = models.CharField(max_length=16, null=True, blank=True)
    from_number = models.CharField(max_length=64, null=True, blank=True)
    to_number = models.CharField(max_length=64, null=True, blank=True)
    raw_data = models.JSONField(default=dict, help_text="Fields of the gateway's recording not held in columns.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "recordings"
        ordering = ["started_at", "call_id"]
        indexes = [models.Index(fields=["fiche", "started_at"], name="recordings_fiche_started")]

    def __str__(self) -> str:
        return self.call_id


class SalesDateState(models.Model):
    """Per-date fetch state. A date whose sales list came back empty counts as covered."""

    sales_date = models.DateField(primary_key=True)
    last_fetched_at = models.DateTimeField(null=True, blank=True)
    fiche_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "fiche_sales_dates"
        ordering = ["-sales_date"]

    def __str__(self) -> str:
        return self.sales_date.isoformat()


class JobStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETE = "complete"
    FAILED = "failed"


TERMINAL_STATUSES = (JobStatus.COMPLETE, JobStatus.FAILED)


class ScopeKind(models.TextChoices):
    ALL = "ALL"
    GROUP = "GROUP"
    SELF = "SELF"
    NONE = "NONE"


def _date_array():
    return ArrayField(models.DateField(), default=list, blank=True)


class JobQuerySet(models.QuerySet):
    def update(self, **kwargs):
        """Bulk updates skip model signals: tell the jobs' status snapshots (``fiches.job_snapshots``)."""
        ids = list(self.values_list("pk", flat=True))
        rows = super().update(**kwargs)
        for job_id in ids:
            job_changed(job_id)
        return rows


class ProgressiveFetchJob(TrackedRun):
    """Background fill (or forced revalidation) of a date range, one task per remaining date.

    Its lifecycle (created, started, dispatched, last progress, re-driven, completed, error) and its
    exactly-once end come from ``core.runs.TrackedRun``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    start_date = models.DateField()
    end_date = models.DateField()
    dates_already_fetched = _date_array()
    dates_remaining = _date_array()
    dates_failed = _date_array()
    total_days = models.PositiveIntegerField()
    completed_days = models.PositiveIntegerField(default=0)
    total_fiches = models.PositiveIntegerField(default=0)
    initial_date_counts = models.JSONField(
        default=dict, help_text="Cached fiches per date at creation; total_fiches moves by per-date deltas."
    )
    force_refresh = models.BooleanField(default=False, help_text="Refresh job: refetches every date.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    scope_kind = models.CharField(max_length=8, choices=ScopeKind.choices, default=ScopeKind.NONE)
    scope_groupes = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    scope_crm_user_id = models.CharField(max_length=64, null=True, blank=True)
    webhook_url = models.TextField(null=True, blank=True)
    webhook_secret = models.TextField(null=True, blank=True)
    webhook_attempts = models.PositiveIntegerField(default=0)
    webhook_last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    webhook_last_error = models.TextField(null=True, blank=True)
    webhook_last_attempt_at = models.DateTimeField(null=True, blank=True)
    webhooks_disabled = models.BooleanField(default=False, help_text="Set when a receiver answered 410 Gone.")
    updated_at = models.DateTimeField(auto_now=True)

    objects = JobQuerySet.as_manager()

    TERMINAL_STATUSES = TERMINAL_STATUSES  # the module's constant (core.runs.TrackedRun reads it here)

    class Meta:
        db_table = "progressive_fetch_jobs"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["requested_by", "start_date", "end_date", "created_at"], name="pf_jobs_reuse"),
            models.Index(fields=["status", "created_at"], name="pf_jobs_status"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(end_date__gte=models.F("start_date")), name="pf_jobs_range"),
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="pf_jobs_progress"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.start_date}..{self.end_date} {self.status}"


class WorkflowLog(models.Model):
    """Workflow events written to the database when ``WORKFLOW_LOG_DB_ENABLED=1`` (job created,
    day start/end, updater updates, finalization, reconciler actions), for correlation across
    workers in the admin."""

    workflow = models.CharField(max_length=32, default="fiche")
    event = models.CharField(max_length=64)
    level = models.CharField(max_length=8, default="INFO")
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    date = models.DateField(null=True, blank=True)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "workflow_logs"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%H:%M:%S} {self.event}"
