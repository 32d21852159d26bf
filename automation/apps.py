from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Automation schedules and runs (fetch → transcribe → audit)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "automation"

    def ready(self) -> None:
        from accounts.grants import has_grant
        from audits.services.finish import on_audit_finished
        from automation import notifications
        from automation.services import runs
        from core.exceptions import PermissionDeniedError
        from realtime.registry import register_channel_authorizer
        from transcriptions.services.runs import on_run_finished

        def authorize_run_channel(user, run_id: str) -> None:
            """``private-job-automation-run-{id}``: automation.read."""
            if not has_grant(user, "automation", "read"):
                raise PermissionDeniedError("missing automation.read")

        register_channel_authorizer("private-job-automation-run-", authorize_run_channel, reads=("automation",))
        notifications.register()
        on_run_finished(runs.on_transcription_finished)
        on_audit_finished(runs.on_audit_finished)
