from django.urls import path

from analytics.api import views

# Mounted under /api/analytics/.
analytics_urlpatterns = [
    path("compliance", views.ComplianceView.as_view(), name="analytics-compliance"),
    path("export", views.ComplianceExportView.as_view(), name="analytics-export"),
    path("worst", views.WorstView.as_view(), name="analytics-worst"),
]
