"""Input validation and output shapes for the accounts API (no logic here)."""

from rest_framework import serializers

from accounts.grants import PERMISSION_KEYS, Scope


class LoginInput(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class RefreshInput(serializers.Serializer):
    refresh = serializers.CharField()


class GrantClaim(serializers.Serializer):
    key = serializers.ChoiceField(choices=PERMISSION_KEYS)
    read = serializers.BooleanField()
    write = serializers.BooleanField()
    scope = serializers.ChoiceField(choices=[s.value for s in Scope])


class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    crm_user_id = serializers.CharField(allow_null=True)
    groupes = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    roles = serializers.ListField(child=serializers.CharField(), help_text="Role keys.")
    permissions = GrantClaim(many=True, help_text="Effective grants: union over the user's roles.")
    last_login = serializers.DateTimeField(allow_null=True)
    date_joined = serializers.DateTimeField()


class LoginOutput(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    user = UserOutput()


class RefreshOutput(serializers.Serializer):
    access = serializers.CharField()


# --- Roles --------------------------------------------------------------------------------


class GrantInput(serializers.Serializer):
    key = serializers.ChoiceField(choices=PERMISSION_KEYS)
    can_read = serializers.BooleanField(default=False)
    can_write = serializers.BooleanField(default=False)
    scope = serializers.ChoiceField(choices=[s.value for s in Scope], default=Scope.ALL.value)


class RoleInput(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=128)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    permission_grants = GrantInput(many=True, required=False)
    permission_keys = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Legacy form: ['fiches.read', 'fiches.write', ...]; each grants scope ALL. "
        "Cannot be combined with permission_grants.",
    )

    def validate(self, attrs):
        if "permission_grants" in attrs and "permission_keys" in attrs:
            raise serializers.ValidationError("Give either permission_grants or the legacy permission_keys, not both.")
        grants = attrs.get("permission_grants") or []
        keys = [g["key"] for g in grants]
        if len(keys) != len(set(keys)):
            raise serializers.ValidationError({"permission_grants": "Each permission key may appear once."})
        return attrs


class RoleGrantOutput(serializers.Serializer):
    key = serializers.CharField()
    can_read = serializers.BooleanField()
    can_write = serializers.BooleanField()
    scope = serializers.CharField()


class RoleOutput(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    permission_grants = RoleGrantOutput(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


# --- Users --------------------------------------------------------------------------------


class UserCreateInput(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(trim_whitespace=False, write_only=True)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    crm_user_id = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True, default=None)
    groupes = serializers.ListField(child=serializers.CharField(max_length=128), required=False, default=list)
    is_active = serializers.BooleanField(required=False, default=True)
    roles = serializers.ListField(child=serializers.SlugField(), required=False, default=list, help_text="Role keys.")


class UserUpdateInput(serializers.Serializer):
    email = serializers.EmailField(required=False)
    password = serializers.CharField(trim_whitespace=False, write_only=True, required=False)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    crm_user_id = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    groupes = serializers.ListField(child=serializers.CharField(max_length=128), required=False)
    is_active = serializers.BooleanField(required=False)
    roles = serializers.ListField(child=serializers.SlugField(), required=False, help_text="Role keys.")
