from typing import Any

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.views import APIView


class LimitOffset(LimitOffsetPagination):
    """``?limit=&offset=`` pagination: ``{"count", "next", "previous", "results"}``."""

    default_limit = 50
    max_limit = 200

    def page(self, queryset: Any, request: Request, view: APIView) -> list[Any]:
        """The requested page (never ``None``: there is always a default limit)."""
        return self.paginate_queryset(queryset, request, view=view) or []
