from django.urls import path

from fiches.api import views

# Specific routes come before the catch-all fiche id route.
fiches_urlpatterns = [
    path("status/by-date-range", views.ByDateRangeView.as_view(), name="fiches-by-date-range"),
    path("status/by-date", views.ByDateView.as_view(), name="fiches-by-date"),
    path("cache/warm", views.CacheWarmView.as_view(), name="fiches-cache-warm"),
    path("webhooks/fiches", views.JobPollView.as_view(), name="fiches-job-poll"),
    path("jobs", views.JobListView.as_view(), name="fiches-jobs"),
    path("jobs/<uuid:job_id>", views.JobDetailView.as_view(), name="fiches-job-detail"),
    path("<str:fiche_id>", views.FicheDetailView.as_view(), name="fiche-detail"),
]

recordings_urlpatterns = [
    path("<str:fiche_id>", views.RecordingsView.as_view(), name="fiche-recordings"),
]
