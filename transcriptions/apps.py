from django.apps import AppConfig


class TranscriptionsConfig(AppConfig):
    """Speech-to-text of each sale's recordings (ElevenLabs Scribe), runs per fiche, batches."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "transcriptions"

    def ready(self) -> None:
        from transcriptions.services import batches, runs

        batches.register_operation("transcription", runs.start_batch_item)
        batches.register_item_state("transcription", runs.batch_item_state)
        runs.on_run_finished(runs.report_run_to_batch)
