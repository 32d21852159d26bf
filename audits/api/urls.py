from django.urls import path

from audits.api import views

# Mounted under /api/.
audits_urlpatterns = [
    path("audit-configs", views.AuditConfigListView.as_view(), name="audit-configs"),
    path("audit-configs/<int:config_id>", views.AuditConfigDetailView.as_view(), name="audit-config-detail"),
    path("audits", views.AuditListView.as_view(), name="audits"),
    path("audits/run", views.AuditRunView.as_view(), name="audit-run"),
    path("audits/batch", views.AuditBatchView.as_view(), name="audit-batch"),
    path("audits/calibration", views.CalibrationView.as_view(), name="audit-calibration"),
    path("audits/<uuid:audit_id>", views.AuditDetailView.as_view(), name="audit-detail"),
    path("audits/<uuid:audit_id>/history", views.AuditHistoryView.as_view(), name="audit-history"),
    path("audits/<uuid:audit_id>/steps/<int:position>/rerun", views.StepRerunView.as_view(), name="audit-step-rerun"),
    path(
        "audits/<uuid:audit_id>/steps/<int:position>/control-points/<int:index>/rerun",
        views.ControlPointRerunView.as_view(),
        name="audit-control-point-rerun",
    ),
    path("audits/<uuid:audit_id>/steps/<int:position>/reviews", views.StepReviewView.as_view(), name="audit-reviews"),
    path(
        "audits/<uuid:audit_id>/steps/<int:position>/control-points/<int:index>/disputes",
        views.DisputeCreateView.as_view(),
        name="audit-dispute-create",
    ),
    path("audits/<uuid:audit_id>/disputes", views.AuditDisputesView.as_view(), name="audit-disputes"),
    path("disputes", views.DisputeListView.as_view(), name="disputes"),
    path("disputes/metrics", views.DisputeMetricsView.as_view(), name="dispute-metrics"),
    path("disputes/<uuid:dispute_id>", views.DisputeDetailView.as_view(), name="dispute-detail"),
    path("disputes/<uuid:dispute_id>/accept", views.DisputeAcceptView.as_view(), name="dispute-accept"),
    path("disputes/<uuid:dispute_id>/reject", views.DisputeRejectView.as_view(), name="dispute-reject"),
    path("audit-configs/<int:config_id>/trust", views.ConfigTrustView.as_view(), name="audit-config-trust"),
    path("audit-configs/<int:config_id>/versions", views.ConfigVersionsView.as_view(), name="audit-config-versions"),
    path(
        "audit-configs/<int:config_id>/versions/<int:version>/activate",
        views.ConfigVersionActivateView.as_view(),
        name="audit-config-version-activate",
    ),
    path(
        "audit-configs/<int:config_id>/evaluations",
        views.ConfigEvaluationsView.as_view(),
        name="audit-config-evaluations",
    ),
    path("evaluations/<uuid:evaluation_id>", views.EvaluationDetailView.as_view(), name="evaluation-detail"),
    path("audits/reaudit", views.ReauditView.as_view(), name="audit-reaudit"),
    path("audits/reaudit/<uuid:batch_id>", views.ReauditSummaryView.as_view(), name="audit-reaudit-summary"),
    path("audits/<uuid:audit_id>/diff", views.AuditDiffView.as_view(), name="audit-diff"),
    path("audits/<uuid:audit_id>/pin", views.AuditPinView.as_view(), name="audit-pin"),
]
