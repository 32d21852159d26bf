from django.urls import path

from automation.api import views

# Mounted under /api/ (config/urls.py): /api/automation/schedules, /api/automation/runs, ...
automation_urlpatterns = [
    path("automation/schedules", views.ScheduleListView.as_view(), name="automation-schedules"),
    path("automation/schedules/<int:schedule_id>", views.ScheduleDetailView.as_view(), name="automation-schedule"),
    path(
        "automation/schedules/<int:schedule_id>/run",
        views.ScheduleRunView.as_view(),
        name="automation-schedule-run",
    ),
    path(
        "automation/schedules/<int:schedule_id>/runs",
        views.ScheduleRunsView.as_view(),
        name="automation-schedule-runs",
    ),
    path("automation/runs", views.RunListView.as_view(), name="automation-runs"),
    path("automation/runs/<str:run_id>", views.RunDetailView.as_view(), name="automation-run"),
]
