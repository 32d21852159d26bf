"""The demo organisation shared by the demo users (``seed_auth --demo``, accounts) and the CRM
simulator's data (fiches): one place both read, so a SELF demo agent owns real simulated sales
and a GROUP demo manager sees one simulated group."""

from __future__ import annotations

from typing import NamedTuple


class DemoAgent(NamedTuple):
    crm_user_id: str
    first_name: str
    last_name: str
    groupe: str


DEMO_AGENT = DemoAgent("u-417", "Julien", "Thomas", "Lyon-2")
DEMO_MANAGER_GROUPES: tuple[str, ...] = ("Lyon-2",)
