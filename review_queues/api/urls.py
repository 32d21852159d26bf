from django.urls import path

from review_queues.api import views

# Mounted under /api/.
review_queue_urlpatterns = [
    path("review-queues", views.QueueListView.as_view(), name="review-queues"),
    path("review-queues/<int:queue_id>", views.QueueDetailView.as_view(), name="review-queue-detail"),
    path("review-queues/<int:queue_id>/next", views.QueueNextView.as_view(), name="review-queue-next"),
    path("review-queues/<int:queue_id>/items", views.QueueItemsView.as_view(), name="review-queue-items"),
    path(
        "review-queues/<int:queue_id>/items/<int:item_id>/renew",
        views.ItemRenewView.as_view(),
        name="review-queue-item-renew",
    ),
    path(
        "review-queues/<int:queue_id>/items/<int:item_id>/release",
        views.ItemReleaseView.as_view(),
        name="review-queue-item-release",
    ),
    path("review-queues/<int:queue_id>/backfill", views.QueueBackfillView.as_view(), name="review-queue-backfill"),
]
