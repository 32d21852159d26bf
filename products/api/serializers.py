"""Input validation and documented output shapes of the products API. Errors name the field
(``details: {"name": ["..."]}``); the services check the rules the fields cannot see (unknown audit
config ids, a name or code another product has)."""

from __future__ import annotations

from rest_framework import serializers

from products.models import CODE_PATTERN

CODE_HELP = "A short slug-like identifier: letters, digits, '-' and '_'. Unique, case-insensitively."


class ProductInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="Unique, case- and accent-insensitively.")
    code = serializers.RegexField(CODE_PATTERN, max_length=64, help_text=CODE_HELP)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    is_active = serializers.BooleanField(required=False, default=True)
    audit_config_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        default=list,
        help_text="Audit config ids in order: the first active one audits the product's fiches.",
    )


class ProductPatchInput(serializers.Serializer):
    """A PATCH: any subset of the fields; ``audit_config_ids`` replaces the list."""

    name = serializers.CharField(max_length=200, required=False)
    code = serializers.RegexField(CODE_PATTERN, max_length=64, required=False, help_text=CODE_HELP)
    description = serializers.CharField(allow_blank=True, required=False)
    is_active = serializers.BooleanField(required=False)
    audit_config_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False)


class ProductListQuery(serializers.Serializer):
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)
    q = serializers.CharField(required=False, max_length=200, help_text="Name or code contains (case-insensitive).")


class ProductOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    code = serializers.CharField()
    description = serializers.CharField()
    is_active = serializers.BooleanField()
    audit_config_ids = serializers.ListField(child=serializers.IntegerField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
