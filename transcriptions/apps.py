from django.apps import AppConfig


class TranscriptionsConfig(AppConfig):
    """Speech-to-text of each sale's recordings (ElevenLabs Scribe), runs per fiche; the
    ``transcription`` operation of the generic batches."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "transcriptions"

    def ready(self) -> None:
        from batches import services as batches
        from core import inbox
        from realtime.registry import register_channel_authorizer
        from transcriptions import selectors
        from transcriptions.services import batch, runs

        register_channel_authorizer(
            "private-transcription-", selectors.authorize_transcription_channel, reads=("transcriptions",)
        )
        batches.register_operation("transcription", batch.start_batch_item, permission="transcriptions")
        batches.register_item_state("transcription", batch.batch_item_state)
        batches.register_items_waiting("transcription", batch.batch_items_waiting)
        runs.on_run_finished(batch.report_run_to_batch)
        inbox.register(runs.RUN_INBOX)  # recording outcomes → the run's serialized updater
