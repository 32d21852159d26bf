from django.apps import AppConfig


class AuditsConfig(AppConfig):
    """LLM compliance audits of each sale's calls: configs, runs, the evidence gate, compliance."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "audits"

    def ready(self) -> None:
        from accounts.grants import has_grant
        from audits import selectors
        from audits.services import batch as audit_batch
        from audits.services import evaluations, finish, prepare
        from batches import services as batches
        from core import inbox
        from core.exceptions import PermissionDeniedError
        from realtime.registry import register_channel_authorizer
        from transcriptions.services.runs import on_run_finished

        def authorize_audit_channel(user, audit_id: str) -> None:
            """``private-audit-{id}``: audits.read and the audit's fiche in the user's scope."""
            if not has_grant(user, "audits", "read"):
                raise PermissionDeniedError("missing audits.read")
            selectors.audit_for_user(user, audit_id)

        register_channel_authorizer("private-audit-", authorize_audit_channel, reads=("audits",))
        on_run_finished(prepare.resume_waiting_audits)
        batches.register_operation("audit", audit_batch.start_batch_item, permission="audits")
        batches.register_item_state("audit", audit_batch.batch_item_state)
        batches.register_items_waiting("audit", audit_batch.batch_items_waiting)
        inbox.register(finish.AUDIT_INBOX)  # step ends → the audit's serialized updater
        finish.on_audit_finished(evaluations.audit_finished)  # an evaluation's audit ended → its settle
