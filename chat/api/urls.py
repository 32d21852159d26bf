from django.urls import path

from chat.api import views

# Mounted under /api/ (before the fiches' catch-all /api/fiches/{fiche_id}).
chat_urlpatterns = [
    path("audits/<str:audit_id>/chat", views.AuditChatView.as_view(), name="audit-chat"),
    path("fiches/<str:fiche_id>/chat", views.FicheChatView.as_view(), name="fiche-chat"),
]
