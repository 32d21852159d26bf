from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm

from accounts.models import Role, RolePermission, User


class RolePermissionInline(admin.TabularInline):
    model = RolePermission
    extra = 0
    fields = ("permission_key", "can_read", "can_write", "scope")


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "user_count", "updated_at")
    search_fields = ("key", "name")
    inlines = [RolePermissionInline]

    @admin.display(description="users")
    def user_count(self, obj):
        return obj.users.count()


class AdminUserCreationForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class AdminUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"
        widgets = {"roles": forms.CheckboxSelectMultiple}


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = AdminUserChangeForm
    add_form = AdminUserCreationForm
    ordering = ("email",)
    list_display = ("email", "full_name", "crm_user_id", "groupes", "role_keys", "is_active", "is_staff", "last_login")
    list_filter = ("is_active", "is_staff", "roles")
    search_fields = ("email", "first_name", "last_name", "crm_user_id")
    filter_horizontal = ()
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("first_name", "last_name")}),
        ("CRM", {"fields": ("crm_user_id", "groupes")}),
        ("Access", {"fields": ("is_active", "roles", "is_staff", "is_superuser")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("roles")

    @admin.display(description="roles")
    def role_keys(self, obj):
        return ", ".join(r.key for r in obj.roles.all())
