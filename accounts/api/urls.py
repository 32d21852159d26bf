from django.urls import path

from accounts.api import views

auth_urlpatterns = [
    path("login", views.LoginView.as_view(), name="auth-login"),
    path("refresh", views.RefreshView.as_view(), name="auth-refresh"),
    path("me", views.MeView.as_view(), name="auth-me"),
]

admin_urlpatterns = [
    path("roles", views.RoleListView.as_view(), name="admin-roles"),
    path("roles/<int:role_id>", views.RoleDetailView.as_view(), name="admin-role-detail"),
    path("users", views.UserListView.as_view(), name="admin-users"),
    path("users/<int:user_id>", views.UserDetailView.as_view(), name="admin-user-detail"),
]
