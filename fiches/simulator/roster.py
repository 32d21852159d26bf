"""The simulator's call-centre organisation: groups and agents with their CRM user ids.

Kept in one place so that the demo users of ``seed_auth --demo`` match the simulator's data
(a SELF demo agent owns real sales; a GROUP demo manager sees one group's sales).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Agent:
    crm_user_id: str
    first_name: str
    last_name: str
    groupe: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


GROUPS: tuple[str, ...] = ("Lyon-1", "Lyon-2", "Paris-Est", "Marseille", "Lille-Nord")

AGENTS: tuple[Agent, ...] = (
    Agent("u-401", "Camille", "Martin", "Lyon-1"),
    Agent("u-402", "Hugo", "Bernard", "Lyon-1"),
    Agent("u-403", "Léa", "Dubois", "Lyon-1"),
    Agent("u-417", "Julien", "Thomas", "Lyon-2"),
    Agent("u-418", "Chloé", "Robert", "Lyon-2"),
    Agent("u-419", "Nathan", "Richard", "Lyon-2"),
    Agent("u-420", "Manon", "Petit", "Lyon-2"),
    Agent("u-431", "Lucas", "Durand", "Paris-Est"),
    Agent("u-432", "Emma", "Leroy", "Paris-Est"),
    Agent("u-433", "Louis", "Moreau", "Paris-Est"),
    Agent("u-451", "Inès", "Simon", "Marseille"),
    Agent("u-452", "Gabriel", "Laurent", "Marseille"),
    Agent("u-453", "Sarah", "Lefebvre", "Marseille"),
    Agent("u-471", "Arthur", "Michel", "Lille-Nord"),
    Agent("u-472", "Jade", "Garcia", "Lille-Nord"),
)

AGENTS_BY_ID = {agent.crm_user_id: agent for agent in AGENTS}

# The demo users created by `seed_auth --demo` (accounts app) map onto these.
DEMO_AGENT = AGENTS_BY_ID["u-417"]
DEMO_MANAGER_GROUPES = ("Lyon-2",)
