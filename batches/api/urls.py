from django.urls import path

from batches.api import views

batch_urlpatterns = [
    path("<str:batch_id>", views.BatchView.as_view(), name="batch-detail"),
]
