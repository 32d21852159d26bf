from django.urls import path

from fiches.api import views

# Specific routes (status/..., jobs/...) must come before the catch-all fiche id route.
fiches_urlpatterns = [
    path("<str:fiche_id>", views.FicheDetailView.as_view(), name="fiche-detail"),
]

recordings_urlpatterns = [
    path("<str:fiche_id>", views.RecordingsView.as_view(), name="fiche-recordings"),
]
