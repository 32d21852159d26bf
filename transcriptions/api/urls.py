from django.urls import path

from transcriptions.api import views

transcriptions_urlpatterns = [
    path("batch", views.TranscriptionBatchView.as_view(), name="transcriptions-batch"),
    path("<str:fiche_id>", views.FicheTranscriptionView.as_view(), name="fiche-transcription"),
    path("<str:fiche_id>/timeline", views.TimelineView.as_view(), name="fiche-timeline"),
    path(
        "<str:fiche_id>/recordings/<str:call_id>",
        views.RecordingTranscriptionView.as_view(),
        name="recording-transcription",
    ),
]
