"""Products API. Views validate input, call one service or selector, and return."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from core.openapi import errors
from core.pagination import LimitOffset
from products import selectors, services
from products.api import serializers as s

PRODUCT_ID = OpenApiParameter("product_id", int, OpenApiParameter.PATH)


class ProductListView(APIView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page

    def get_permissions(self):
        return [HasGrant("products", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["products"],
        summary="Products by name, with their audit config ids in order",
        parameters=[s.ProductListQuery],
        responses={200: s.ProductOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.ProductListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        queryset = selectors.products_queryset(
            is_active=query.validated_data["is_active"], q=query.validated_data.get("q")
        )
        paginator = self.pagination_class()
        page = paginator.page(queryset, request, view=self)
        return paginator.get_paginated_response([selectors.product_dict(p) for p in page])

    @extend_schema(
        tags=["products"],
        summary="Create a product",
        description="`audit_config_ids` may name inactive configs; unknown ids are a 400. "
        "A name or code another product has (compared case- and accent-insensitively) is a 409 `product_exists`.",
        request=s.ProductInput,
        responses={201: s.ProductOutput, **errors(400, 401, 403, 409)},
    )
    def post(self, request: Request) -> Response:
        data = s.ProductInput(data=request.data)
        data.is_valid(raise_exception=True)
        product = services.product_create(data=data.validated_data, user=request_user(request))
        return Response(selectors.product_dict(selectors.product_get(product.pk)), status=201)


class ProductDetailView(APIView):
    def get_permissions(self):
        return [HasGrant("products", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["products"],
        summary="A product",
        parameters=[PRODUCT_ID],
        responses={200: s.ProductOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, product_id: int) -> Response:
        return Response(selectors.product_dict(selectors.product_get(product_id)))

    @extend_schema(
        tags=["products"],
        summary="Edit a product: any subset of its fields; `audit_config_ids` replaces the list",
        parameters=[PRODUCT_ID],
        request=s.ProductPatchInput,
        responses={200: s.ProductOutput, **errors(400, 401, 403, 404, 409)},
    )
    def patch(self, request: Request, product_id: int) -> Response:
        data = s.ProductPatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.product_update(product_id=product_id, patch=data.validated_data, user=request_user(request))
        return Response(selectors.product_dict(selectors.product_get(product_id)))

    @extend_schema(
        tags=["products"],
        summary="Delete a product (its audit configs stay)",
        parameters=[PRODUCT_ID],
        responses={204: OpenApiResponse(description="Deleted."), **errors(401, 403, 404)},
    )
    def delete(self, request: Request, product_id: int) -> Response:
        services.product_delete(product_id=product_id, user=request_user(request))
        return Response(status=204)
