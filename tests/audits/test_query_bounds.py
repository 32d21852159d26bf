"""Datetime filters at the edge of the calendar: a naive ``0001-01-01`` made aware in our time zone
falls before year 1 (DRF let the ``OverflowError`` through: a 500); it is a 400 naming the parameter,
and the far end of the calendar is an ordinary filter."""

from __future__ import annotations

import pytest

from audits.services import configs
from tests.audits.test_api import config_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(make_role, make_user, auth_client):
    return auth_client(make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com"))


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/audits?created_from=0001-01-01T00:00:00", "created_from"),
        ("/api/audits?created_to=0001-01-01", "created_to"),
        ("/api/audits/calibration?audit_config_id=1&from=0001-01-01", "date_from"),
        ("/api/audits/calibration?audit_config_id=1&from=2026-01-01&to=0001-01-01T00:00", "date_to"),
    ],
)
def test_a_datetime_before_year_1_in_our_time_zone_is_a_400_naming_it(url, field, client):
    response = client.get(url)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"] == {field: ["Datetime value out of range."]}


def test_the_rest_of_the_calendar_filters(client):
    config = configs.config_create(data=config_payload())
    response = client.get("/api/audits?created_from=0001-01-02&created_to=9999-12-31T23:59:59")
    assert response.status_code == 200, response.content
    response = client.get(f"/api/audits/calibration?audit_config_id={config.pk}&from=0001-01-02&to=9999-12-31")
    assert response.status_code == 200, response.content
