from rest_framework.pagination import LimitOffsetPagination


class LimitOffset(LimitOffsetPagination):
    """``?limit=&offset=`` pagination: ``{"count", "next", "previous", "results"}``."""

    default_limit = 50
    max_limit = 200
