from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.api.urls import admin_urlpatterns, auth_urlpatterns
from analytics.api.urls import analytics_urlpatterns
from audits.api.urls import audits_urlpatterns
from automation.api.urls import automation_urlpatterns
from batches.api.urls import batch_urlpatterns
from chat.api.urls import chat_urlpatterns
from core.health import HealthView
from costs.api.urls import costs_urlpatterns
from fiches.api.urls import fiches_urlpatterns, recordings_urlpatterns
from ops import views as ops_views
from products.api.urls import products_urlpatterns
from realtime.api.urls import delivery_urlpatterns, realtime_urlpatterns
from review_queues.api.urls import review_queue_urlpatterns
from transcriptions.api.urls import transcriptions_urlpatterns

handler404 = "config.exceptions.not_found_handler"
handler500 = "config.exceptions.server_error_handler"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/health", HealthView.as_view(), name="health"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("api/auth/", include(auth_urlpatterns)),
    path("api/admin/", include(admin_urlpatterns)),
    path("api/fiches/webhooks/deliveries/", include(delivery_urlpatterns)),
    path("api/", include(chat_urlpatterns)),  # before the fiches' catch-all /api/fiches/{id}
    path("api/fiches/", include(fiches_urlpatterns)),
    path("api/realtime/", include(realtime_urlpatterns)),
    path("api/recordings/", include(recordings_urlpatterns)),
    path("api/transcriptions/", include(transcriptions_urlpatterns)),
    path("api/batches/", include(batch_urlpatterns)),
    path("api/", include(audits_urlpatterns)),
    path("api/", include(products_urlpatterns)),
    path("api/", include(automation_urlpatterns)),
    path("api/", include(review_queue_urlpatterns)),
    path("api/analytics/", include(analytics_urlpatterns)),
    path("api/analytics/", include(costs_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
