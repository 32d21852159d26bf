from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts import cache_versions
from accounts.keys import PERMISSION_KEYS, Scope


class AuthChangeQuerySet(models.QuerySet):
    """Bulk writes skip model signals (``accounts.signals``): these bump the auth cache version
    themselves (``accounts.cache_versions``), so a bulk change applies on the next request too."""

    def update(self, **kwargs):
        rows = super().update(**kwargs)
        cache_versions.bump()
        return rows

    def delete(self):
        result = super().delete()
        cache_versions.bump()
        return result

    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(objs, *args, **kwargs)
        cache_versions.bump()
        return created

    def bulk_update(self, objs, fields, *args, **kwargs):
        rows = super().bulk_update(objs, fields, *args, **kwargs)
        cache_versions.bump()
        return rows


class UserManager(BaseUserManager.from_queryset(AuthChangeQuerySet)):  # type: ignore[misc]
    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("An email is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)


class Role(models.Model):
    key = models.SlugField(max_length=64, unique=True, help_text="Stable identifier, e.g. 'manager'.")
    name = models.CharField(max_length=128)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AuthChangeQuerySet.as_manager()

    class Meta:
        db_table = "roles"
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class RolePermission(models.Model):
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="permissions")
    permission_key = models.CharField(max_length=32, choices=[(k, k) for k in PERMISSION_KEYS])
    can_read = models.BooleanField(default=False)
    can_write = models.BooleanField(default=False)
    scope = models.CharField(max_length=8, choices=[(s.value, s.value) for s in Scope], default=Scope.ALL)

    objects = AuthChangeQuerySet.as_manager()

    class Meta:
        db_table = "role_permissions"
        ordering = ["role_id", "permission_key"]
        constraints = [
            models.UniqueConstraint(fields=["role", "permission_key"], name="role_permission_unique_key"),
            models.CheckConstraint(condition=Q(permission_key__in=PERMISSION_KEYS), name="role_permission_known_key"),
            models.CheckConstraint(condition=Q(scope__in=[s.value for s in Scope]), name="role_permission_scope"),
        ]

    def __str__(self) -> str:
        flags = "".join(f for f, on in (("r", self.can_read), ("w", self.can_write)) if on) or "-"
        return f"{self.role_id}:{self.permission_key}:{flags}:{self.scope}"


class User(AbstractBaseUser, PermissionsMixin):
    """A platform user. Logs in by email; linked to the CRM by ``crm_user_id`` and ``groupes``."""

    email = models.EmailField(unique=True)
    first_name = models.CharField(max_length=150, blank=True, default="")
    last_name = models.CharField(max_length=150, blank=True, default="")
    crm_user_id = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        unique=True,
        help_text="The user's id in the CRM (used by SELF scope). Unique when set.",
    )
    groupes = ArrayField(
        models.CharField(max_length=128),
        default=list,
        blank=True,
        help_text="CRM group names the user belongs to (used by GROUP scope).",
    )
    roles = models.ManyToManyField(Role, related_name="users", blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Can log into the Django admin.")
    date_joined = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        db_table = "users"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email

    def clean(self):
        super().clean()
        self.email = self.__class__.objects.normalize_email(self.email).lower()
        if self.crm_user_id is not None:
            self.crm_user_id = self.crm_user_id.strip() or None
        cleaned = []
        for groupe in self.groupes or []:
            groupe = str(groupe).strip()
            if not groupe:
                raise ValidationError({"groupes": "Group names cannot be blank."})
            if groupe not in cleaned:
                cleaned.append(groupe)
        self.groupes = cleaned

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()
