from django.urls import path

from audits.api import views

# Mounted under /api/.
audits_urlpatterns = [
    path("audit-configs", views.AuditConfigListView.as_view(), name="audit-configs"),
    path("audit-configs/<int:config_id>", views.AuditConfigDetailView.as_view(), name="audit-config-detail"),
    path("audits", views.AuditListView.as_view(), name="audits"),
    path("audits/run", views.AuditRunView.as_view(), name="audit-run"),
    path("audits/<uuid:audit_id>", views.AuditDetailView.as_view(), name="audit-detail"),
]
