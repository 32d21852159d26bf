"""Domain errors of the fiches app, rendered by the API error envelope."""

from core.exceptions import ApplicationError, DependencyUnavailable, NotFoundError, PermissionDeniedError


class FicheNotFound(NotFoundError):
    code = "fiche_not_found"
    default_message = "Fiche not found."


class ScopeDenied(PermissionDeniedError):
    code = "scope_denied"
    default_message = "This fiche is outside your visibility scope."


def fiche_refused(fiche_id: str, key: str) -> ScopeDenied:
    """The one answer to a fiche outside the user's ``key`` scope **and** to a fiche they cannot prove is
    in it (not cached, unknown): a refusal never tells a foreign id from an unknown one."""
    return ScopeDenied(
        f"No fiche {fiche_id} in your {key} scope (a fiche must be cached — open its sales date — to be in it).",
        details={"fiche_id": fiche_id},
    )


class CrmUnavailable(DependencyUnavailable):
    code = "crm_unavailable"
    default_message = "The CRM gateway is unavailable and nothing is cached for this request."


class FicheBusy(ApplicationError):
    status_code = 503
    code = "fiche_busy"
    default_message = "This fiche is being fetched by another request; try again shortly."


class CrmBusy(ApplicationError):
    status_code = 503
    code = "crm_busy"
    default_message = "The CRM call rate is saturated and nothing is cached for this request; try again shortly."
