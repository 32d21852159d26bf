"""Accounts API: login, refresh, me, and the admin role/user APIs. Views stay thin."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api import serializers as s
from accounts.permissions import HasGrant
from accounts.throttles import LoginEmailThrottle, LoginIPThrottle
from accounts.tokens import refresh_access_token
from core.openapi import errors
from core.pagination import LimitOffset

# --- Auth ---------------------------------------------------------------------------------


class LoginView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginIPThrottle, LoginEmailThrottle]

    @extend_schema(
        tags=["auth"],
        summary="Log in with email and password",
        request=s.LoginInput,
        responses={200: s.LoginOutput, **errors(400, 401, 429)},
        auth=[],
    )
    def post(self, request):
        data = s.LoginInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.auth_login(**data.validated_data, request=request)
        user = selectors.user_queryset().get(pk=result.user.pk)
        return Response(
            {"access": result.tokens.access, "refresh": result.tokens.refresh, "user": selectors.user_to_dict(user)}
        )


class RefreshView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["auth"],
        summary="Exchange a refresh token for a new access token (claims as of now)",
        request=s.RefreshInput,
        responses={200: s.RefreshOutput, **errors(400, 401)},
        auth=[],
    )
    def post(self, request):
        data = s.RefreshInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"access": refresh_access_token(data.validated_data["refresh"])})


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["auth"],
        summary="The authenticated user, their roles and effective grants",
        responses={200: s.UserOutput, **errors(401)},
    )
    def get(self, request):
        return Response(selectors.user_to_dict(selectors.user_queryset().get(pk=request.user.pk)))


# --- Admin: roles -------------------------------------------------------------------------


def _grant_specs(validated: dict) -> list[services.GrantSpec] | None:
    if "permission_keys" in validated:
        return services.grants_from_legacy_keys(validated["permission_keys"])
    if "permission_grants" in validated:
        return [services.GrantSpec(**g) for g in validated["permission_grants"]]
    return None


def _role_fields(validated: dict) -> dict:
    return {k: validated[k] for k in ("key", "name", "description") if k in validated}


class RoleListView(APIView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page

    def get_permissions(self):
        return [HasGrant("users", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["admin"],
        summary="List roles with their grants (needs users.read)",
        parameters=[],
        responses={200: s.RoleOutput(many=True), **errors(401, 403)},
    )
    def get(self, request):
        paginator = LimitOffset()
        page = paginator.page(selectors.role_queryset(), request, view=self)
        return paginator.get_paginated_response([selectors.role_to_dict(r) for r in page])

    @extend_schema(
        tags=["admin"],
        summary="Create a role (needs users.write)",
        request=s.RoleInput,
        responses={201: s.RoleOutput, **errors(400, 401, 403, 409)},
    )
    def post(self, request):
        data = s.RoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        role = services.role_create(**_role_fields(data.validated_data), grants=_grant_specs(data.validated_data) or [])
        return Response(selectors.role_to_dict(selectors.role_queryset().get(pk=role.pk)), status=201)


class RoleDetailView(APIView):
    def get_permissions(self):
        return [HasGrant("users", "read" if self.request.method == "GET" else "write")()]

    def _role(self, role_id):
        return get_object_or_404(selectors.role_queryset(), pk=role_id)

    @extend_schema(
        tags=["admin"], summary="A role (needs users.read)", responses={200: s.RoleOutput, **errors(401, 403, 404)}
    )
    def get(self, request, role_id: int):
        return Response(selectors.role_to_dict(self._role(role_id)))

    @extend_schema(
        tags=["admin"],
        summary="Update a role; given grants replace the role's grants (needs users.write)",
        request=s.RoleInput(partial=True),
        responses={200: s.RoleOutput, **errors(400, 401, 403, 404, 409)},
    )
    def patch(self, request, role_id: int):
        role = self._role(role_id)
        data = s.RoleInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.role_update(role=role, **_role_fields(data.validated_data), grants=_grant_specs(data.validated_data))
        return Response(selectors.role_to_dict(self._role(role_id)))

    @extend_schema(
        tags=["admin"],
        summary="Delete a role that no user holds (needs users.write)",
        responses={204: OpenApiResponse(description="Deleted."), **errors(401, 403, 404, 409)},
    )
    def delete(self, request, role_id: int):
        services.role_delete(role=self._role(role_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Admin: users -------------------------------------------------------------------------


class UserListView(APIView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page

    def get_permissions(self):
        return [HasGrant("users", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["admin"],
        summary="List users (needs users.read)",
        responses={200: s.UserOutput(many=True), **errors(401, 403)},
    )
    def get(self, request):
        paginator = LimitOffset()
        page = paginator.page(selectors.user_queryset(), request, view=self)
        return paginator.get_paginated_response([selectors.user_to_dict(u) for u in page])

    @extend_schema(
        tags=["admin"],
        summary="Create a user (needs users.write)",
        request=s.UserCreateInput,
        responses={201: s.UserOutput, **errors(400, 401, 403, 409)},
    )
    def post(self, request):
        data = s.UserCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(**data.validated_data)
        return Response(selectors.user_to_dict(selectors.user_queryset().get(pk=user.pk)), status=201)


class UserDetailView(APIView):
    def get_permissions(self):
        return [HasGrant("users", "read" if self.request.method == "GET" else "write")()]

    def _user(self, user_id):
        return get_object_or_404(selectors.user_queryset(), pk=user_id)

    @extend_schema(
        tags=["admin"], summary="A user (needs users.read)", responses={200: s.UserOutput, **errors(401, 403, 404)}
    )
    def get(self, request, user_id: int):
        return Response(selectors.user_to_dict(self._user(user_id)))

    @extend_schema(
        tags=["admin"],
        summary="Update a user: roles, groupes, crm_user_id, is_active, password... (needs users.write)",
        request=s.UserUpdateInput,
        responses={200: s.UserOutput, **errors(400, 401, 403, 404, 409)},
    )
    def patch(self, request, user_id: int):
        user = self._user(user_id)
        data = s.UserUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.user_update(user=user, **data.validated_data)
        return Response(selectors.user_to_dict(self._user(user_id)))
