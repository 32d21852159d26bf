from django.apps import AppConfig


class AuditsConfig(AppConfig):
    """LLM compliance audits of each sale's calls: configs, runs, the evidence gate, compliance."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "audits"

    def ready(self) -> None:
        from accounts.grants import has_grant
        from audits import selectors
        from audits.services import runs
        from core.exceptions import PermissionDeniedError
        from realtime.registry import register_channel_authorizer
        from transcriptions.services import batches
        from transcriptions.services.runs import on_run_finished

        def authorize_audit_channel(user, audit_id: str) -> None:
            """``private-audit-{id}``: audits.read and the audit's fiche in the user's scope."""
            if not has_grant(user, "audits", "read"):
                raise PermissionDeniedError("missing audits.read")
            selectors.audit_for_user(user, audit_id)

        register_channel_authorizer("private-audit-", authorize_audit_channel, reads=("audits",))
        on_run_finished(runs.resume_waiting_audits)
        batches.register_operation("audit", runs.start_batch_item)
        batches.register_item_state("audit", runs.batch_item_state)
