from django.urls import path

from costs.api import views

# Mounted under /api/analytics/ (beside the analytics app's routes).
costs_urlpatterns = [
    path("costs", views.CostsView.as_view(), name="analytics-costs"),
    path("budgets", views.BudgetsView.as_view(), name="analytics-budgets"),
]
