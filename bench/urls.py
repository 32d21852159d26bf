"""The benchmarks' URLs: the project's, plus a plain Django JSON view (no auth, no database)
measured beside our endpoints as the floor of a request on this box."""

from django.http import JsonResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


def plain_json(request):
    return JsonResponse({"status": "ok", "progress": 100, "items": list(range(10))})


urlpatterns = [path("bench/plain", plain_json), *project_urlpatterns]
