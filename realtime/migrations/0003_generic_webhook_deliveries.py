"""Webhook deliveries become generic (realtime imports no domain app): each delivery stores the
exact message its app handed over (``payload``), its signing ``secret`` and which app object sent
it (``source``/``source_id``) instead of a foreign key to a progressive fetch job and normalized
job columns. Existing deliveries keep their bytes: their message is rebuilt once from the old
columns, exactly as the old sender rebuilt it for each attempt."""

from datetime import UTC

import orjson
from django.db import migrations, models

JOB_SOURCE = "progressive_fetch_job"


def _iso(value):
    return value.isoformat()


def forwards(apps, schema_editor):
    WebhookDelivery = apps.get_model("realtime", "WebhookDelivery")
    Partial = apps.get_model("realtime", "WebhookDeliveryPartialFiche")
    for delivery in WebhookDelivery.objects.select_related("job").iterator(chunk_size=500):
        partial = [
            {
                "fiche_id": p.fiche_id,
                "sales_date": _iso(p.sales_date),
                "prospect_name": " ".join(x for x in (p.prospect_prenom, p.prospect_nom) if x),
                "groupe": p.groupe,
                "recordings_count": p.recordings_count,
            }
            for p in Partial.objects.filter(delivery_id=delivery.pk).order_by("position")
        ]
        data = {
            "jobId": str(delivery.job_id),
            "status": delivery.payload_job_status,
            "startDate": _iso(delivery.payload_start_date),
            "endDate": _iso(delivery.payload_end_date),
            "progress": delivery.payload_progress,
            "completedDays": delivery.payload_completed_days,
            "totalDays": delivery.payload_total_days,
            "totalFiches": delivery.payload_total_fiches,
            "datesCompleted": [_iso(d) for d in delivery.payload_dates_completed],
            "datesRemaining": [_iso(d) for d in delivery.payload_dates_remaining],
            "datesFailed": [_iso(d) for d in delivery.payload_dates_failed],
            "error": delivery.payload_error,
            "dataUrl": delivery.payload_data_url,
            "partialData": partial,
            "partialDataTruncated": delivery.payload_partial_truncated,
        }
        timestamp = delivery.payload_timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            source=JOB_SOURCE,
            source_id=str(delivery.job_id),
            secret=delivery.job.webhook_secret,
            payload=orjson.dumps({"type": delivery.event, "timestamp": timestamp, "data": data}).decode(),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0002_purge_webhook_deliveries_schedule"),
        ("fiches", "0004_beat_schedules"),
    ]

    operations = [
        migrations.AddField("webhookdelivery", "source", models.CharField(max_length=64, null=True)),
        migrations.AddField("webhookdelivery", "source_id", models.CharField(max_length=64, null=True)),
        migrations.AddField(
            "webhookdelivery",
            "secret",
            models.TextField(blank=True, null=True, help_text="Signing secret (never shown)."),
        ),
        migrations.AddField("webhookdelivery", "payload", models.TextField(null=True)),
        migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True),
        migrations.DeleteModel("WebhookDeliveryPartialFiche"),
        migrations.RemoveIndex("webhookdelivery", "webhook_deliveries_job"),
        migrations.RemoveField("webhookdelivery", "job"),
        *[
            migrations.RemoveField("webhookdelivery", name)
            for name in (
                "payload_timestamp",
                "payload_job_status",
                "payload_progress",
                "payload_start_date",
                "payload_end_date",
                "payload_completed_days",
                "payload_total_days",
                "payload_total_fiches",
                "payload_dates_completed",
                "payload_dates_remaining",
                "payload_dates_failed",
                "payload_error",
                "payload_data_url",
                "payload_partial_truncated",
            )
        ],
        migrations.AlterField(
            "webhookdelivery",
            "source",
            models.CharField(max_length=64, help_text="The app object kind that sent it, e.g. progressive_fetch_job."),
        ),
        migrations.AlterField("webhookdelivery", "source_id", models.CharField(max_length=64)),
        migrations.AlterField(
            "webhookdelivery", "payload", models.TextField(help_text="The JSON body sent on every attempt.")
        ),
        migrations.AddIndex(
            "webhookdelivery",
            models.Index(fields=["source", "source_id", "created_at"], name="webhook_deliveries_source"),
        ),
    ]
