"""Quotes of the calls shown to a reader who does not see personal data in clear (no transcriptions/recordings
write grant): an audit's citations and rationales, a re-audit's diff and an evaluation's changed points carry
placeholders on the API; the stored rows keep what was said."""

from __future__ import annotations

import pytest

from accounts.tokens import issue_tokens
from audits.models import Citation, ControlPointResult
from audits.selectors import evaluation_dict
from tests.privacy.test_retention import NOW, a_fiche, an_audit, an_evaluation, version  # noqa: F401

SAID = "oui mon numéro c'est le 06 12 34 56 78 et mon mail jean.dupont@gmail.com"


@pytest.fixture
def audited(version):  # noqa: F811
    audit = an_audit(a_fiche(), version, finished_at=NOW)
    Citation.objects.filter(control_point__step_result__audit=audit).update(quote=SAID, text=SAID, verified=True)
    ControlPointResult.objects.filter(step_result__audit=audit).update(rationale=f"Le client dit « {SAID} ».")
    return audit


def get(user, path: str) -> str:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_tokens(user).access}")
    response = client.get(path)
    assert response.status_code == 200, response.content
    return response.content.decode()


@pytest.mark.django_db
def test_an_audits_quotes_and_rationales_are_redacted_for_a_reader_without_the_write_grant(
    audited, make_role, make_user
):
    reader = make_user(make_role("q-reader", audits=("r", "ALL"), transcriptions=("r", "ALL")))
    manager = make_user(make_role("q-manager", audits=("r", "ALL"), recordings=("rw", "ALL")))
    shown = get(reader, f"/api/audits/{audited.pk}")
    assert "06 12 34 56 78" not in shown and "jean.dupont@gmail.com" not in shown
    assert "[TÉLÉPHONE]" in shown and "[EMAIL]" in shown
    clear = get(manager, f"/api/audits/{audited.pk}")
    assert "06 12 34 56 78" in clear and "jean.dupont@gmail.com" in clear
    assert Citation.objects.filter(text=SAID).exists()  # what is stored is unchanged


@pytest.mark.django_db
def test_an_evaluations_quotes_are_redacted_when_asked(version):  # noqa: F811
    evaluation = an_evaluation(version, finished_at=NOW)
    evaluation.result["changed"][0]["candidate"]["quotes"] = [SAID]
    evaluation.save(update_fields=["result"])
    redacted = str(evaluation_dict(evaluation, redacted=True)["result"])
    assert "06 12 34 56 78" not in redacted and "[TÉLÉPHONE]" in redacted
    assert SAID in str(evaluation_dict(evaluation)["result"])
