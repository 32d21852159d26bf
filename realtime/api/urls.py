from django.urls import path

from realtime.api import views

realtime_urlpatterns = [
    path("pusher/auth", views.PusherAuthView.as_view(), name="pusher-auth"),
]

delivery_urlpatterns = [
    path("<int:delivery_id>/retry", views.DeliveryRetryView.as_view(), name="webhook-delivery-retry"),
]
