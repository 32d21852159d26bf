"""The facts the compliance figures are read from, kept beside the audits (never edited by hand).

- ``AuditFact``: one row per (fiche, config) for the audit that **counts** (``audits.selectors.
  counting_audit_ids``: the pinned one, else the latest completed production audit of the config's active
  version; never an evaluation audit), with the fiche's dimensions copied (sale date and its week and month,
  group, agent, product: scope filters and groupings read them without a join) and its figures (score,
  niveau, compliance, critical misses, audited call seconds, cost).
- ``PointFact``: one row per control point verdict of those audits (the effective one: the reviewer's, else
  ``pending`` for an advisory AI verdict, else the AI's after the evidence gate), keyed like calibration by
  (config, step position, point index), with the same dimensions.

Kept by ``analytics.services``: refreshed per (fiche, config) when an audit ends, is reviewed, rerun or
pinned; rebuilt per config when its active version changes; a Postgres trigger on ``fiche_cache`` carries a
fiche's group / agent / product / date changes into its facts in the same transaction (scope filters are
never stale); a beat reconciler repairs what a lost message missed.
"""

from __future__ import annotations

from django.db import models


class AuditFact(models.Model):
    audit = models.OneToOneField("audits.Audit", on_delete=models.CASCADE, primary_key=True, related_name="+")
    fiche = models.ForeignKey("fiches.FicheCache", on_delete=models.CASCADE, related_name="+")
    config = models.ForeignKey("audits.AuditConfig", on_delete=models.CASCADE, related_name="+")
    config_version = models.ForeignKey("audits.AuditConfigVersion", on_delete=models.CASCADE, related_name="+")
    sales_date = models.DateField()
    week = models.DateField(help_text="The Monday of the sale's ISO week.")
    month = models.DateField(help_text="The first day of the sale's month.")
    groupe = models.CharField(max_length=128, null=True, blank=True)
    crm_user_id = models.CharField(max_length=64, null=True, blank=True)
    agent_name = models.CharField(max_length=255, null=True, blank=True)
    produit = models.CharField(max_length=255, null=True, blank=True)
    score_percentage = models.FloatField(null=True, blank=True)
    niveau = models.CharField(max_length=16, null=True, blank=True)
    is_compliant = models.BooleanField(null=True, blank=True)
    needs_review = models.BooleanField(default=False)
    critical_misses = models.PositiveIntegerField(default=0, help_text="Critical points or steps not passed.")
    audited_seconds = models.FloatField(default=0.0, help_text="Seconds of the fiche's transcribed calls.")
    llm_cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    stt_cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField()

    class Meta:
        db_table = "analytics_audit_facts"
        constraints = [models.UniqueConstraint(fields=["fiche", "config"], name="analytics_one_counting_audit")]
        indexes = [
            models.Index(fields=["sales_date"], name="analytics_af_date"),
            models.Index(fields=["config", "sales_date"], name="analytics_af_config_date"),
            models.Index(fields=["groupe", "sales_date"], name="analytics_af_group_date"),
            models.Index(fields=["crm_user_id", "sales_date"], name="analytics_af_agent_date"),
        ]

    def __str__(self) -> str:
        return f"fact of {self.audit_id}"


class PointFact(models.Model):
    # No database-level foreign keys: they made a config's rebuild spend a third of its time checking two
    # million references it has just read from those tables; Django still cascades deletions.
    audit = models.ForeignKey("audits.Audit", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    config = models.ForeignKey(
        "audits.AuditConfig", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    config_version = models.ForeignKey(
        "audits.AuditConfigVersion", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    step_position = models.PositiveSmallIntegerField()
    control_point_index = models.PositiveSmallIntegerField()
    is_critical = models.BooleanField(default=False)
    status = models.CharField(max_length=16, help_text="pass, fail, uncertain, not_applicable or pending.")
    sales_date = models.DateField()
    week = models.DateField()
    month = models.DateField()
    groupe = models.CharField(max_length=128, null=True, blank=True)
    crm_user_id = models.CharField(max_length=64, null=True, blank=True)
    produit = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        db_table = "analytics_point_facts"
        indexes = [
            models.Index(fields=["config", "sales_date"], name="analytics_pf_config_date"),
            models.Index(fields=["crm_user_id", "sales_date"], name="analytics_pf_agent_date"),
        ]

    def __str__(self) -> str:
        return f"{self.audit_id} {self.step_position}.{self.control_point_index}: {self.status}"


class PointDay(models.Model):
    """The point facts counted per day, config, point, group, product and status (no agent): what the
    control-point figures read for every reader whose scope is not SELF and who does not filter by agent
    (a year is ~140k rows instead of ~1M). Re-aggregated per (config, sale date) in the transaction that changes
    that day's point facts (SQL function ``analytics_point_day_refresh``, migration 0002)."""

    config = models.ForeignKey(
        "audits.AuditConfig", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    step_position = models.PositiveSmallIntegerField()
    control_point_index = models.PositiveSmallIntegerField()
    is_critical = models.BooleanField(default=False)
    status = models.CharField(max_length=16)
    sales_date = models.DateField()
    week = models.DateField()
    month = models.DateField()
    groupe = models.CharField(max_length=128, null=True, blank=True)
    produit = models.CharField(max_length=255, null=True, blank=True)
    n = models.PositiveIntegerField()

    class Meta:
        db_table = "analytics_point_days"
        indexes = [
            models.Index(fields=["config", "sales_date"], name="analytics_pd_config_date"),
            models.Index(
                fields=["sales_date"],
                include=[
                    *("config", "step_position", "control_point_index", "is_critical"),
                    *("status", "week", "month", "n"),
                ],
                name="analytics_pd_date",
            ),
            models.Index(fields=["groupe", "sales_date"], name="analytics_pd_group_date"),
        ]

    def __str__(self) -> str:
        return f"{self.sales_date} {self.step_position}.{self.control_point_index} {self.status}: {self.n}"
