from django.apps import AppConfig


class ReviewQueuesConfig(AppConfig):
    """Review queues: which completed audits a human looks at (rules and a stratified sample), claimed
    by one reviewer at a time under a lease, done when reviewed."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "review_queues"
    verbose_name = "Review queues"

    def ready(self) -> None:
        from audits.services.finish import on_audit_finished
        from audits.services.reviews import on_audit_reviewed
        from realtime.registry import register_channel_authorizer
        from review_queues import services

        on_audit_finished(services.audit_finished)
        on_audit_reviewed(services.audit_reviewed)
        register_channel_authorizer("private-review-queue-", services.authorize_queue_channel)
