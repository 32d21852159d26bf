"""The simulator's call-centre organisation: groups and agents with their CRM user ids.

The demo agent comes from ``accounts.demo`` (which the demo users of ``seed_auth --demo`` read too),
so a SELF demo agent owns real sales and a GROUP demo manager sees one group's sales.
"""

from dataclasses import dataclass

from accounts import demo


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
    Agent(*demo.DEMO_AGENT),
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

# The demo users created by `seed_auth --demo` (accounts.demo) map onto these.
DEMO_AGENT = AGENTS_BY_ID[demo.DEMO_AGENT.crm_user_id]
DEMO_MANAGER_GROUPES = demo.DEMO_MANAGER_GROUPES
assert set(DEMO_MANAGER_GROUPES) <= set(GROUPS), "the demo manager's groups must exist in the simulator"
