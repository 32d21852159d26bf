"""Shared pieces of the ops console."""

from __future__ import annotations

from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """A model admin (or inline) whose rows are only read here: they are written by their workflow."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
