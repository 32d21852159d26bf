"""The default audit config for French insurance phone sales (``seed_audit_configs``).

Each step is a statement the regulator requires on the call (``../shared/compliance-fr.md``: Code des
assurances, ACPR positions on phone selling); each control point asks for its meaning, and its hint
names the words an agent typically says, so the evidence is the agent's own words."""

from __future__ import annotations

from typing import Any

DEFAULT_CONFIG_NAME = "Vente à distance — assurance (conformité ACPR)"


def _cp(
    question: str, hint: str, critical: bool = False, *, conditional: bool = False, speaker: str = "agent"
) -> dict[str, Any]:
    """A control point. Every mandatory statement is proven by the agent's own words (``speaker``);
    « Si … » points are ``conditional``: the only ones the LLM may answer not_applicable."""
    return {
        "question": question,
        "evidence_hint": hint,
        "is_critical": critical,
        "conditional": conditional,
        "speaker": speaker,
    }


DEFAULT_CONFIG: dict[str, Any] = {
    "name": DEFAULT_CONFIG_NAME,
    "description": (
        "Mentions obligatoires d'un appel de vente d'assurance par téléphone : identité et ORIAS, caractère "
        "commercial, consentement, enregistrement, besoins, offre, rétractation, signature, conclusion."
    ),
    "is_active": True,
    "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
    "steps": [
        {
            "name": "Présentation et identification",
            "instructions": "L'agent doit se présenter, présenter sa société, sa qualité de courtier et son "
            "numéro d'immatriculation ORIAS (art. R112-7).",
            "weight": 15,
            "is_critical": True,
            "pass_ratio": 1.0,
            "control_points": [
                _cp(
                    "L'agent donne-t-il son nom et celui de son cabinet ?",
                    "je m'appelle, à l'appareil, cabinet",
                    True,
                ),
                _cp(
                    "L'agent précise-t-il qu'il est courtier et donne-t-il son numéro ORIAS ?",
                    "courtier, numéro ORIAS",
                    True,
                ),
            ],
        },
        {
            "name": "Caractère commercial de l'appel",
            "instructions": "Dès le début, l'agent annonce que l'appel est un appel commercial (art. L112-2-2).",
            "weight": 10,
            "is_critical": True,
            "pass_ratio": 1.0,
            "control_points": [
                _cp("L'agent annonce-t-il qu'il s'agit d'un appel commercial ?", "appel commercial, démarchage", True),
            ],
        },
        {
            "name": "Consentement à poursuivre",
            "instructions": "La personne doit être invitée à dire si elle accepte de poursuivre l'appel ; un refus "
            "y met fin immédiatement (loi 2021-402).",
            "weight": 10,
            "is_critical": True,
            "pass_ratio": 1.0,
            "control_points": [
                _cp(
                    "L'agent demande-t-il au client s'il accepte de poursuivre ?",
                    "acceptez-vous de poursuivre, êtes-vous d'accord",
                    True,
                ),
            ],
        },
        {
            "name": "Information sur l'enregistrement",
            "instructions": "L'appel est enregistré, conservé deux ans après la signature, une copie peut être "
            "obtenue sur demande, et refuser l'enregistrement met fin à l'appel (décret 2022-34).",
            "weight": 15,
            "is_critical": True,
            "pass_ratio": 0.75,
            "control_points": [
                _cp("L'agent informe-t-il que l'appel est enregistré ?", "appel enregistré, enregistrement", True),
                _cp("L'agent précise-t-il que l'enregistrement est conservé deux ans ?", "conservé deux ans", True),
                _cp(
                    "L'agent indique-t-il qu'une copie de l'enregistrement peut être obtenue sur demande ?",
                    "copie sur simple demande",
                ),
                _cp(
                    "L'agent indique-t-il que refuser l'enregistrement met fin à l'appel ?",
                    "refuser l'enregistrement, fin de l'appel",
                ),
            ],
        },
        {
            "name": "Analyse des besoins",
            "instructions": "L'agent s'informe de la situation et de la couverture actuelle de la personne "
            "(devoir de conseil, art. L521-4).",
            "weight": 10,
            "is_critical": False,
            "pass_ratio": 0.5,
            "control_points": [
                _cp(
                    "L'agent interroge-t-il le client sur sa situation et sa couverture actuelle ?",
                    "votre situation, actuellement couvert",
                ),
                _cp(
                    "L'agent demande-t-il au client comment il est assuré actuellement ?",
                    "actuellement assuré, contrat actuel",
                ),
                _cp(
                    "Si le client a un contrat, l'agent lui explique-t-il comment le résilier ?",
                    "résiliation, résilier votre contrat actuel",
                    conditional=True,
                ),
            ],
        },
        {
            "name": "Présentation de l'offre",
            "instructions": "L'agent présente les garanties, le prix mensuel et la date de début du contrat.",
            "weight": 15,
            "is_critical": False,
            "pass_ratio": 0.67,
            "control_points": [
                _cp("L'agent présente-t-il les garanties de la formule proposée ?", "garanties"),
                _cp("L'agent annonce-t-il le prix mensuel ?", "euros par mois, cotisation mensuelle"),
                _cp("L'agent indique-t-il la date de début du contrat ?", "date d'effet, début du contrat"),
            ],
        },
        {
            "name": "Droit de rétractation",
            "instructions": "L'agent informe du délai de renonciation de quatorze jours calendaires (trente pour "
            "l'assurance vie et obsèques) (art. L112-2-1, L132-5-1).",
            "weight": 10,
            "is_critical": True,
            "pass_ratio": 1.0,
            "control_points": [
                _cp(
                    "L'agent informe-t-il du délai de rétractation de quatorze jours ?",
                    "délai de rétractation, quatorze jours, 14 jours",
                    True,
                ),
            ],
        },
        {
            "name": "Documents et signature",
            "instructions": "Les documents sont envoyés avant toute signature ; aucune signature orale ni code lu "
            "par le client au téléphone (ACPR 2022-R-01).",
            "weight": 10,
            "is_critical": True,
            "pass_ratio": 1.0,
            "control_points": [
                _cp(
                    "L'agent annonce-t-il l'envoi des documents par e-mail avant toute signature ?",
                    "documents par e-mail, avant toute signature",
                    True,
                ),
                _cp(
                    "L'agent précise-t-il qu'aucune signature ni aucun code ne se fait par téléphone ?",
                    "aucune signature par téléphone, aucun code",
                    True,
                ),
            ],
        },
        {
            "name": "Conclusion",
            "instructions": "L'agent récapitule ce qui a été convenu et la suite.",
            "weight": 5,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                _cp(
                    "L'agent récapitule-t-il la formule choisie, son prix et la date de début ?",
                    "je récapitule, pour récapituler",
                ),
            ],
        },
    ],
}
