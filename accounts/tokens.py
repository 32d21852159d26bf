"""JWT issuance. Access tokens carry the user's claims for the front end's convenience;
authorization never trusts them (it re-reads the grants from the database on each request).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.grants import effective_grants
from core.exceptions import NotAuthenticatedError


def access_claims(user) -> dict:
    return {
        "email": user.email,
        "crm_user_id": user.crm_user_id,
        "groupes": list(user.groupes or []),
        "roles": sorted(user.roles.values_list("key", flat=True)),
        "permissions": [grant.as_claim() for grant in effective_grants(user).values()],
    }


def _access_for(user) -> str:
    token = AccessToken.for_user(user)
    for name, value in access_claims(user).items():
        token[name] = value
    return str(token)


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str


def issue_tokens(user) -> TokenPair:
    """A new refresh token (identity only) and an access token with the current claims."""
    return TokenPair(access=_access_for(user), refresh=str(RefreshToken.for_user(user)))


def refresh_access_token(raw_refresh: str) -> str:
    """A new access token for a valid refresh token of an active user, with claims as of now."""
    try:
        refresh = RefreshToken(raw_refresh)  # type: ignore[arg-type]  # simplejwt decodes a str token; the stubs say Token
    except TokenError as exc:
        raise NotAuthenticatedError(str(exc), code="token_not_valid") from exc
    user_id = refresh.payload.get("user_id")
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    if user is None or not user.is_active:
        raise NotAuthenticatedError("No active account found for the given token.", code="user_inactive")
    return _access_for(user)
