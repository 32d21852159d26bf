from django.apps import AppConfig


class TranscriptionsConfig(AppConfig):
    """Speech-to-text of each sale's recordings (ElevenLabs Scribe), runs per fiche, batches."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "transcriptions"

    def ready(self) -> None:
        from realtime.registry import register_channel_authorizer
        from transcriptions import selectors
        from transcriptions.services import batches, runs

        register_channel_authorizer(
            "private-transcription-", selectors.authorize_transcription_channel, reads=("transcriptions",)
        )
        batches.register_operation("transcription", runs.start_batch_item)
        batches.register_item_state("transcription", runs.batch_item_state)
        runs.on_run_finished(runs.report_run_to_batch)
