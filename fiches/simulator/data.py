"""Deterministic synthetic CRM data: the sales list and fiche details of the gateway contract.

Pure functions of ``(seed, date, index, revision)``: every random draw comes from a
``random.Random`` seeded with a SHA-256 of those parts (Python's ``hash()`` is salted per process).
Each sale is generated on its own, so one fiche's details never need the rest of its day.

A fiche id encodes its sales date and its index within that date (see ``fiche_id_for``), so ids
are unique across the CRM and ``fiche_details`` finds a sale from its id alone. ``revision`` > 0
changes about a fifth of the sales (a new statut and/or one more recording); revision 0 is the base.
"""

from __future__ import annotations

import hashlib
import html
import random
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any

from fiches.simulator.roster import AGENTS, Agent

JsonDict = dict[str, Any]

EPOCH = date(2020, 1, 1)
MAX_SALES_PER_DAY = 999
REVISION_CHANGE_RATE = 0.2

PRENOMS_F = (
    "Julie",
    "Marie",
    "Sophie",
    "Camille",
    "Nathalie",
    "Isabelle",
    "Sandrine",
    "Céline",
    "Aurélie",
    "Émilie",
    "Claire",
    "Anne",
    "Christine",
    "Valérie",
    "Laura",
    "Pauline",
    "Élodie",
    "Hélène",
    "Chantal",
    "Monique",
    "Sylvie",
    "Océane",
    "Mathilde",
    "Agnès",
    "Brigitte",
    "Margaux",
)
PRENOMS_M = (
    "Thomas",
    "Nicolas",
    "Julien",
    "Pierre",
    "Jean",
    "Philippe",
    "Michel",
    "Alain",
    "Laurent",
    "Sébastien",
    "Christophe",
    "Frédéric",
    "David",
    "Olivier",
    "Éric",
    "Patrick",
    "Antoine",
    "Maxime",
    "Romain",
    "Guillaume",
    "Jacques",
    "François",
    "Kévin",
    "Mathieu",
    "Benoît",
    "Yannick",
)
PRENOMS_ENFANTS = (
    "Léo",
    "Emma",
    "Jade",
    "Louis",
    "Gabriel",
    "Lina",
    "Hugo",
    "Chloé",
    "Arthur",
    "Inès",
    "Nathan",
    "Zoé",
    "Raphaël",
    "Louise",
    "Jules",
    "Alice",
    "Adam",
    "Rose",
    "Tom",
    "Lou",
)
NOMS = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Lefèvre",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guérin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
    "Perrin",
    "Morin",
    "Mathieu",
    "Clément",
    "Gauthier",
    "Dumont",
    "Lopez",
    "Fontaine",
    "Chevalier",
    "Robin",
    "Masson",
    "Sanchez",
    "N'Diaye",
    "Da Silva",
)
STREETS = (
    "rue de la République",
    "avenue Jean Jaurès",
    "rue Victor Hugo",
    "boulevard Gambetta",
    "rue Pasteur",
    "place de la Mairie",
    "rue des Lilas",
    "chemin des Vignes",
    "allée des Tilleuls",
    "rue du Général de Gaulle",
    "avenue de la Libération",
    "rue Nationale",
    "impasse des Roses",
    "rue Émile Zola",
    "quai Saint-Vincent",
    "rue Garibaldi",
    "cours Lafayette",
    "rue Jules Ferry",
    "avenue Foch",
    "rue de la Gare",
    "rue du Moulin",
    "boulevard Voltaire",
    "rue Paul Bert",
)
EMAIL_DOMAINS = ("example.fr", "example.com", "example.net", "example.org")

# (ville, codes postaux, région)
CITIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Lyon", tuple(f"6900{n}" for n in range(1, 10)), "rhone"),
    ("Villeurbanne", ("69100",), "rhone"),
    ("Vénissieux", ("69200",), "rhone"),
    ("Caluire-et-Cuire", ("69300",), "rhone"),
    ("Villefranche-sur-Saône", ("69400",), "rhone"),
    ("Bron", ("69500",), "rhone"),
    ("Saint-Étienne", ("42000", "42100"), "rhone"),
    ("Grenoble", ("38000", "38100"), "rhone"),
    ("Paris", tuple(f"750{n:02d}" for n in range(1, 21)), "idf"),
    ("Montreuil", ("93100",), "idf"),
    ("Saint-Denis", ("93200",), "idf"),
    ("Noisy-le-Grand", ("93160",), "idf"),
    ("Vincennes", ("94300",), "idf"),
    ("Créteil", ("94000",), "idf"),
    ("Meaux", ("77100",), "idf"),
    ("Marseille", tuple(f"130{n:02d}" for n in range(1, 17)), "paca"),
    ("Aix-en-Provence", ("13090", "13100"), "paca"),
    ("Aubagne", ("13400",), "paca"),
    ("Toulon", ("83000", "83100", "83200"), "paca"),
    ("Avignon", ("84000",), "paca"),
    ("Nice", ("06000", "06100", "06200", "06300"), "paca"),
    ("Lille", ("59000", "59160", "59260", "59777", "59800"), "nord"),
    ("Roubaix", ("59100",), "nord"),
    ("Tourcoing", ("59200",), "nord"),
    ("Villeneuve-d'Ascq", ("59491", "59650"), "nord"),
    ("Dunkerque", ("59140", "59240"), "nord"),
    ("Lens", ("62300",), "nord"),
    ("Arras", ("62000",), "nord"),
    ("Bordeaux", ("33000", "33100", "33200", "33300", "33800"), "autre"),
    ("Toulouse", ("31000", "31100", "31200", "31300", "31400", "31500"), "autre"),
    ("Nantes", ("44000", "44100", "44200", "44300"), "autre"),
    ("Strasbourg", ("67000", "67100", "67200"), "autre"),
    ("Montpellier", ("34000", "34070", "34080", "34090"), "autre"),
    ("Rennes", ("35000", "35200", "35700"), "autre"),
    ("Dijon", ("21000",), "autre"),
    ("Clermont-Ferrand", ("63000", "63100"), "autre"),
)
GROUP_REGIONS = {"Lyon-1": "rhone", "Lyon-2": "rhone", "Paris-Est": "idf", "Marseille": "paca", "Lille-Nord": "nord"}
# The group's switchboard prefix; an agent's line is the prefix followed by its 4-digit number.
GROUP_PHONE_PREFIXES = {
    "Lyon-1": "047812",
    "Lyon-2": "047256",
    "Paris-Est": "014378",
    "Marseille": "049154",
    "Lille-Nord": "032012",
}
REGIONAL_PROSPECT_SHARE = 0.65


# name -> (weight, monthly premium range of the middle formula, formulas, prospect age range)
PRODUCTS: dict[str, tuple[int, tuple[float, float], tuple[str, str, str], tuple[int, int]]] = {
    "Santé Sérénité": (24, (55.0, 160.0), ("Essentielle", "Confort", "Sérénité+"), (25, 75)),
    "Santé Essentiel": (20, (28.0, 85.0), ("Éco", "Essentiel", "Essentiel+"), (20, 70)),
    "Santé Senior Confort": (10, (70.0, 190.0), ("Senior", "Senior Confort", "Senior Premium"), (60, 85)),
    "Obsèques Tranquillité": (14, (14.0, 60.0), ("Capital 3 000 €", "Capital 5 000 €", "Capital 8 000 €"), (50, 85)),
    "Prévoyance Famille": (12, (18.0, 70.0), ("Base", "Famille", "Famille Premium"), (25, 60)),
    "Auto Confort": (11, (32.0, 115.0), ("Tiers", "Tiers Plus", "Tous risques"), (19, 75)),
    "Habitation Plus": (9, (11.0, 45.0), ("Studio", "Appartement", "Maison"), (20, 80)),
}
FORMULA_FACTORS = (0.78, 1.0, 1.32)

STATUTS: tuple[tuple[str, int], ...] = (
    ("Vente validée", 50),
    ("En attente de signature", 18),
    ("En attente de pièces justificatives", 10),
    ("Contrat en cours de traitement", 8),
    ("Vente annulée", 8),
    ("Rétractation client", 6),
)
# What a revision may turn each statut into (always a different statut).
STATUT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "Vente validée": ("Rétractation client", "Vente annulée"),
    "En attente de signature": ("Vente validée", "Vente annulée"),
    "En attente de pièces justificatives": ("Contrat en cours de traitement", "Vente validée"),
    "Contrat en cours de traitement": ("Vente validée",),
    "Vente annulée": ("En attente de signature",),
    "Rétractation client": ("Vente annulée",),
}
SIGNED_STATUTS = frozenset({"Vente validée", "Contrat en cours de traitement"})
CANCELLED_STATUTS = frozenset({"Vente annulée", "Rétractation client"})

RECORDING_COUNT_WEIGHTS = (15, 35, 25, 15, 10)  # 0..4 recordings per sale
MAX_RECORDINGS = len(RECORDING_COUNT_WEIGHTS) - 1
DAY_START_S = 8 * 3600 + 30 * 60  # first call 08:30Z
DAY_LAST_CALL_S = 19 * 3600  # last call starts by 19:00Z
MODIFICATION_S = (19 * 3600 + 30 * 60, 21 * 3600 + 30 * 60)  # after the last call (ends by 19:30Z)
REVISED_MODIFICATION_S = (21 * 3600 + 45 * 60, 23 * 3600 + 45 * 60)  # after a call a revision adds

ETIQUETTES = ("Prioritaire", "Rappel", "Client fidèle", "Multi-équipement", "Parrainage", "Sensible prix", "VIP")
COMMENT_TEXTS = (
    "Rappeler jeudi en fin de matinée.",
    "Client hésitant sur la formule, envoyer le comparatif.",
    "Pièces reçues, dossier complet.",
    "Souhaite une date d'effet au premier du mois prochain.",
    "Conjoint à inclure au contrat, attendre sa carte vitale.",
    "A comparé avec son assureur actuel, prix validé.",
    "Demande de résiliation de l'ancien contrat envoyée (loi Hamon).",
    "Prospect joignable uniquement après 18h.",
    "Signature électronique relancée par SMS.",
)
RDV_OBJETS = ("Signature électronique", "Rappel client", "Point sur les garanties", "Relance pièces justificatives")
ASSUREURS = (
    "MAAF",
    "MACIF",
    "AXA",
    "Groupama",
    "MAIF",
    "Allianz",
    "Matmut",
    "GMF",
    "Generali",
    "Crédit Agricole Assurances",
)
CONTRACT_TYPES = ("auto", "habitation", "santé", "prévoyance", "obsèques", "moto")
LEAD_SOURCES = ("Formulaire web", "Comparateur en ligne", "Parrainage", "Appel entrant", "Salon", "Campagne SMS")
PAYMENT_MODES = ("prélèvement", "prélèvement", "prélèvement", "carte bancaire", "chèque")
PERIODICITES = ("mensuelle", "mensuelle", "mensuelle", "trimestrielle", "annuelle")
RECLAMATION_MOTIFS = (
    "Démarchage contesté",
    "Délai de traitement",
    "Erreur de tarification",
    "Prélèvement non autorisé",
)
# Guarantee lines of the quote e-mail, by product family (the product name's first word).
GARANTIES: dict[str, tuple[str, ...]] = {
    "Santé": (
        "Consultations généralistes",
        "Consultations spécialistes",
        "Pharmacie remboursée à 65 %",
        "Pharmacie remboursée à 30 %",
        "Analyses et examens de laboratoire",
        "Radiologie",
        "Hospitalisation – frais de séjour",
        "Hospitalisation – honoraires",
        "Chambre particulière",
        "Forfait journalier hospitalier",
        "Lit d'accompagnant",
        "Transport sanitaire",
        "Optique – verres simples",
        "Optique – verres complexes",
        "Optique – monture",
        "Lentilles",
        "Chirurgie réfractive",
        "Dentaire – soins",
        "Dentaire – prothèses",
        "Orthodontie",
        "Implantologie",
        "Aides auditives",
        "Médecines douces",
        "Cure thermale",
        "Prévention – vaccins",
        "Maternité – forfait naissance",
        "Assistance à domicile",
        "Téléconsultation 24h/24",
    ),
    "Obsèques": (
        "Capital versé aux proches",
        "Organisation des obsèques",
        "Rapatriement du corps",
        "Transport du défunt",
        "Frais de cérémonie",
        "Assistance aux proches",
        "Soutien psychologique",
        "Démarches administratives",
        "Revalorisation annuelle du capital",
        "Capital doublé en cas d'accident",
    ),
    "Prévoyance": (
        "Capital décès",
        "Rente éducation",
        "Rente de conjoint",
        "Indemnités journalières",
        "Invalidité permanente totale",
        "Invalidité partielle",
        "Frais d'obsèques",
        "Aide-ménagère",
        "Garde d'enfants",
        "Soutien scolaire",
    ),
    "Auto": (
        "Responsabilité civile",
        "Défense pénale et recours",
        "Bris de glace",
        "Vol et tentative de vol",
        "Incendie",
        "Catastrophes naturelles",
        "Dommages tous accidents",
        "Assistance 0 km",
        "Véhicule de remplacement",
        "Protection du conducteur",
        "Équipements et accessoires",
    ),
    "Habitation": (
        "Responsabilité civile vie privée",
        "Incendie et explosion",
        "Dégâts des eaux",
        "Vol et vandalisme",
        "Bris de glace",
        "Catastrophes naturelles",
        "Tempête, grêle, neige",
        "Dommages électriques",
        "Assistance serrurerie",
        "Relogement temporaire",
        "Objets de valeur",
        "Jardin et piscine",
    ),
}
LEGAL_MENTIONS = (
    "Ce devis est valable trente jours à compter de sa date d'émission. Les garanties prennent effet "
    "à la date indiquée aux conditions particulières, sous réserve de l'encaissement de la première cotisation.",
    "Conformément à l'article L. 112-9 du Code des assurances, vous disposez d'un délai de quatorze jours "
    "calendaires révolus pour renoncer à votre contrat, sans avoir à justifier de motif ni à supporter de pénalités.",
    "Les informations recueillies font l'objet d'un traitement destiné à la gestion de votre contrat. "
    "Vous disposez d'un droit d'accès, de rectification, d'effacement et de portabilité de vos données.",
    "Les remboursements indiqués s'entendent dans la limite des frais réels engagés et après intervention "
    "du régime obligatoire. Les montants exprimés en pourcentage se réfèrent à la base de remboursement.",
    "En cas de réclamation, vous pouvez contacter notre service clients par courrier ou par téléphone. "
    "Si le désaccord persiste, vous pouvez saisir gratuitement le Médiateur de l'Assurance.",
    "Le contrat est régi par le Code des assurances. L'autorité chargée du contrôle de l'assureur est "
    "l'Autorité de contrôle prudentiel et de résolution (ACPR), 4 place de Budapest, 75009 Paris.",
)
MAIL_CSS = (
    "body{margin:0;padding:0;background:#f4f5f7;font-family:Arial,Helvetica,sans-serif;color:#1f2933}"
    ".wrapper{max-width:680px;margin:0 auto;background:#ffffff}"
    ".header{background:#0b4f8a;color:#ffffff;padding:24px 32px;font-size:22px;font-weight:bold}"
    ".content{padding:24px 32px;font-size:14px;line-height:1.6}"
    "table.garanties{width:100%;border-collapse:collapse;margin:16px 0}"
    "table.garanties th{background:#e6eef6;text-align:left;padding:8px;border:1px solid #c9d6e3}"
    "table.garanties td{padding:8px;border:1px solid #dde3ea;vertical-align:top}"
    ".retenue{background:#fff7e0;font-weight:bold}"
    ".footer{padding:16px 32px;font-size:11px;color:#6b7785;background:#f0f2f5}"
    ".cta{display:inline-block;background:#e8590c;color:#ffffff;padding:12px 24px;border-radius:4px;"
    "text-decoration:none;font-weight:bold}"
)
MAIL_MIN_CHARS = 6_000
MAIL_MAX_CHARS = 36_000


@dataclass
class _Sale:
    """One generated sale: the sales-list item (with recordings) and what the details derive from it."""

    item: JsonDict
    agent: Agent
    base_premium: float  # monthly premium of the middle formula
    formula: int  # index of the chosen formula in the product's formulas
    revised: bool  # whether the requested revision changed this sale

    def premium(self, formula: int) -> float:
        return _premium(self.base_premium, formula)


def fiche_id_for(day: date, index: int) -> str:
    """The CRM id of the ``index``-th sale of ``day``: ``(days since 2019-12-31) * 1000 + index``."""
    if not 0 <= index < MAX_SALES_PER_DAY or day < EPOCH:
        raise ValueError(f"no fiche id for {day.isoformat()} #{index}")
    return str(((day - EPOCH).days + 1) * 1000 + index)


def parse_fiche_id(fiche_id: str) -> tuple[date, int] | None:
    """``(sales date, index)`` of an id made by ``fiche_id_for``; None for anything else."""
    if not fiche_id.isascii() or not fiche_id.isdigit() or fiche_id.startswith("0"):
        return None
    day_number, index = divmod(int(fiche_id), 1000)
    if day_number < 1 or index >= MAX_SALES_PER_DAY:
        return None
    try:
        return EPOCH + timedelta(days=day_number - 1), index
    except OverflowError:
        return None


def sales_count(day: date, *, seed: int, fiches_per_day: int) -> int:
    """Number of sales on ``day``: weekdays ``fiches_per_day`` ±30 %, Saturdays half, Sundays 0 or a few."""
    if fiches_per_day <= 0 or day < EPOCH:
        return 0
    rng = _rng(seed, day.isoformat(), "count")
    weekday = day.weekday()
    if weekday == 6:
        count = 0 if rng.random() < 0.6 else rng.randint(1, max(1, round(fiches_per_day * 0.1)))
    else:
        mean = fiches_per_day * (0.5 if weekday == 5 else 1.0)
        count = round(mean * rng.uniform(0.7, 1.3))
    return min(count, MAX_SALES_PER_DAY)


def sales_for_date(
    day: date, *, seed: int, fiches_per_day: int, revision: int, include_recordings: bool
) -> list[JsonDict]:
    """The sales-list items of ``day`` (contract section 1), in fiche id order."""
    items = []
    for index in range(sales_count(day, seed=seed, fiches_per_day=fiches_per_day)):
        item = _sale(day, index, seed=seed, revision=revision).item
        if not include_recordings:
            del item["recordings"]
        items.append(item)
    return items


def fiche_details(fiche_id: str, *, seed: int, fiches_per_day: int, revision: int) -> JsonDict | None:
    """The details response body of one fiche (contract section 2); None when the id does not exist."""
    parsed = parse_fiche_id(fiche_id)
    if parsed is None:
        return None
    day, index = parsed
    if index >= sales_count(day, seed=seed, fiches_per_day=fiches_per_day):
        return None
    sale = _sale(day, index, seed=seed, revision=revision)
    item, prospect = sale.item, sale.item["prospect"]
    produit, statut, email = item["produit"], item["statut"], prospect["email"]
    # The same generator draws everything that does not depend on the statut (so a revision changing the
    # statut leaves it alone), then the statut-dependent parts.
    rng = _rng(seed, day.isoformat(), index, "details")

    created_on = day - timedelta(days=rng.randint(0, 21))
    # Created before the first call when created on the sales date; modified after the last call.
    creation_s = rng.randint(7 * 3600, DAY_START_S - 600) if created_on == day else rng.randint(8 * 3600, 18 * 3600)
    modification_rng = _rng(seed, day.isoformat(), index, "modification", revision if sale.revised else 0)
    modification_s = modification_rng.randint(*(REVISED_MODIFICATION_S if sale.revised else MODIFICATION_S))

    def moment() -> str:
        """A timestamp between the fiche's creation and its sales date."""
        offset = rng.randint(0, (day - created_on).days)
        earliest_s = creation_s + 600 if offset == 0 else 8 * 3600
        return _iso_z(created_on + timedelta(days=offset), rng.randint(earliest_s, max(earliest_s, 19 * 3600)))

    age = rng.randint(*PRODUCTS[produit][3])
    full_prospect = {
        "civilite": prospect["civilite"],
        "nom": prospect["nom"],
        "prenom": prospect["prenom"],
        "date_naissance": _birth_date(rng, day, age),
        "email": email,
        "telephone": prospect["telephone"],
        "adresse": f"{rng.randint(1, 180)}{rng.choice(('', '', '', ' bis'))} {rng.choice(STREETS)}",
        "code_postal": prospect["code_postal"],
        "ville": prospect["ville"],
    }
    enfants = []
    if 26 <= age <= 60:
        for _ in range(rng.choice((0, 0, 1, 1, 2, 2, 3))):
            enfants.append(
                {
                    "prenom": rng.choice(PRENOMS_ENFANTS),
                    "date_naissance": _birth_date(rng, day, rng.randint(0, min(age - 20, 25))),
                }
            )
    conjoint = None
    if rng.random() < 0.55:
        conjoint = {
            "nom": prospect["nom"] if rng.random() < 0.7 else rng.choice(NOMS),
            "prenom": rng.choice(PRENOMS_M if prospect["civilite"] == "Mme" else PRENOMS_F),
            "date_naissance": _birth_date(rng, day, max(18, age + rng.randint(-5, 5))),
        }
    etiquettes = [
        {"id": f"e{i}", "libelle": label}
        for i, label in enumerate(rng.sample(ETIQUETTES, rng.choice((0, 0, 1, 1, 2))), start=1)
    ]
    commentaires = [
        {"id": f"k{i}", "auteur": item["crm_user_id"], "date": when, "texte": rng.choice(COMMENT_TEXTS)}
        for i, when in enumerate(sorted(moment() for _ in range(rng.randint(0, 3))), start=1)
    ]
    rendez_vous = [
        {"id": f"r{i}", "date": when, "objet": rng.choice(RDV_OBJETS)}
        for i, when in enumerate(sorted(moment() for _ in range(rng.randint(0, 2))), start=1)
    ]
    autres_contrats = [
        {"assureur": rng.choice(ASSUREURS), "type": contract_type}
        for contract_type in rng.sample(CONTRACT_TYPES, rng.randint(0, 2))
    ]
    raw_sections = {
        "notes_internes": rng.choice(COMMENT_TEXTS),
        "source_lead": rng.choice(LEAD_SOURCES),
        "campagne": f"CAMP-{created_on:%Y%m}-{rng.randint(1, 40):02d}",
        "score_qualification": rng.randint(20, 100),
    }
    date_effet = _first_of_next_month(day)
    elements_souscription = {
        "date_effet": date_effet.isoformat(),
        "mode_paiement": rng.choice(PAYMENT_MODES),
        "periodicite": rng.choice(PERIODICITES),
        "jour_prelevement": rng.choice((5, 10, 15)),
        "numero_contrat": f"CT-{fiche_id}",
    }
    tarification = [
        {"formule": formula, "cotisation_mensuelle": sale.premium(i), "retenue": i == sale.formula}
        for i, formula in enumerate(PRODUCTS[produit][2])
    ]
    mail_devis = {
        "sujet": f"Votre devis {produit} – {prospect['prenom']} {prospect['nom']}",
        "html": _mail_devis_html(rng, sale, tarification, date_effet),
    }

    # Statut-dependent parts.
    documents = [{"id": "d1", "type": "devis", "nom": f"devis-{fiche_id}.pdf", "date": created_on.isoformat()}]
    optional_documents = [("piece_identite", "carte-identite.pdf"), ("rib", "rib.pdf")]
    if statut in SIGNED_STATUTS:
        optional_documents += [
            ("conditions_particulieres", f"conditions-particulieres-{fiche_id}.pdf"),
            ("mandat_sepa", "mandat-sepa.pdf"),
        ]
    for doc_type, name in optional_documents:
        if rng.random() < 0.8:
            documents.append({"id": f"d{len(documents) + 1}", "type": doc_type, "nom": name, "date": moment()[:10]})
    mails = [
        {
            "id": "m1",
            "sujet": f"Votre devis {produit}",
            "date": _iso_z(created_on, creation_s + 300),
            "destinataire": email,
        }
    ]
    if statut != "Vente annulée":
        mails.append({"id": "m2", "sujet": "Vos documents à signer", "date": moment(), "destinataire": email})
    if statut in SIGNED_STATUTS:
        mails.append(
            {
                "id": f"m{len(mails) + 1}",
                "sujet": "Confirmation de votre souscription",
                "date": _iso_z(day, modification_s),
                "destinataire": email,
            }
        )
    alertes = []
    if statut == "En attente de pièces justificatives":
        alertes.append(
            {"id": "a1", "type": "pieces_manquantes", "message": "Justificatif de domicile manquant", "date": moment()}
        )
    if rng.random() < 0.1:
        alertes.append(
            {"id": f"a{len(alertes) + 1}", "type": "rappel", "message": "Rappel client à effectuer", "date": moment()}
        )
    reclamations = []
    if statut in CANCELLED_STATUTS and rng.random() < 0.4:
        reclamations.append(
            {
                "id": "rc1",
                "date": _iso_z(day, modification_s),
                "motif": rng.choice(RECLAMATION_MOTIFS),
                "statut": "Ouverte",
            }
        )

    return {
        "success": True,
        "message": "OK",
        "cle": item["cle"],
        "fiche": {
            "information": {
                "fiche_id": fiche_id,
                "sales_date": item["sales_date"],
                "groupe": item["groupe"],
                "crm_user_id": item["crm_user_id"],
                "agent_name": item["agent_name"],
                "statut": statut,
                "produit": produit,
                "date_creation": _iso_z(created_on, creation_s),
                "date_modification": _iso_z(day, modification_s),
            },
            "prospect": full_prospect,
            "etiquettes": etiquettes,
            "documents": documents,
            "commentaires": commentaires,
            "mails": mails,
            "rendez_vous": rendez_vous,
            "alertes": alertes,
            "enfants": enfants,
            "conjoint": conjoint,
            "reclamations": reclamations,
            "autres_contrats": autres_contrats,
            "raw_sections": raw_sections,
            "elements_souscription": elements_souscription,
            "tarification": tarification,
            "mail_devis": mail_devis,
            "recordings": item["recordings"],
        },
    }


def _rng(*parts: object) -> random.Random:
    """A generator seeded by a stable hash of ``parts`` (not ``hash()``, which is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _sale(day: date, index: int, *, seed: int, revision: int) -> _Sale:
    """The sale at ``revision``: the base sale, of which a revision changes about one in five."""
    sale = _base_sale(day, index, seed=seed)
    if revision <= 0:
        return sale
    rng = _rng(seed, day.isoformat(), index, "revision", revision)
    if rng.random() >= REVISION_CHANGE_RATE:
        return sale
    item, recordings = sale.item, sale.item["recordings"]
    roll = rng.random()
    can_add_recording = len(recordings) < MAX_RECORDINGS
    if roll < 0.45 or not can_add_recording:
        item["statut"] = rng.choice(STATUT_TRANSITIONS[item["statut"]])
    if roll >= 0.3 and can_add_recording:
        last_end = max(
            (_seconds_of_day(r["started_at"]) + r["duration_seconds"] for r in recordings), default=DAY_START_S
        )
        started_s = rng.randint(last_end + 60, last_end + 3600)
        recordings.append(_recording(rng, item, sale.agent, len(recordings), started_s))
    sale.revised = True
    return sale


def _base_sale(day: date, index: int, *, seed: int) -> _Sale:
    rng = _rng(seed, day.isoformat(), index, "sale")
    agent = rng.choice(AGENTS)
    is_female = rng.random() < 0.52
    prenom = rng.choice(PRENOMS_F if is_female else PRENOMS_M)
    nom = rng.choice(NOMS)
    ville, code_postal = _city(rng, agent.groupe)
    email_suffix = str(rng.randint(1, 99)) if rng.random() < 0.3 else ""
    produit = rng.choices(list(PRODUCTS), weights=[product[0] for product in PRODUCTS.values()])[0]
    base_premium = round(rng.uniform(*PRODUCTS[produit][1]), 2)
    formula = rng.choices(range(len(FORMULA_FACTORS)), weights=(30, 50, 20))[0]
    item: JsonDict = {
        "fiche_id": fiche_id_for(day, index),
        "cle": f"{rng.getrandbits(24):06x}",
        "sales_date": day.isoformat(),
        "groupe": agent.groupe,
        "crm_user_id": agent.crm_user_id,
        "agent_name": agent.name,
        "statut": rng.choices([s for s, _ in STATUTS], weights=[w for _, w in STATUTS])[0],
        "produit": produit,
        "montant_cotisation": _premium(base_premium, formula),
        "prospect": {
            "civilite": "Mme" if is_female else "M.",
            "nom": nom,
            "prenom": prenom,
            "email": f"{_slug(prenom)}.{_slug(nom)}{email_suffix}@{rng.choice(EMAIL_DOMAINS)}",
            "telephone": rng.choice(("06", "07")) + f"{rng.randint(0, 99_999_999):08d}",
            "code_postal": code_postal,
            "ville": ville,
        },
    }
    count = rng.choices(range(MAX_RECORDINGS + 1), weights=RECORDING_COUNT_WEIGHTS)[0]
    starts = sorted(rng.randint(DAY_START_S, DAY_LAST_CALL_S) for _ in range(count))
    item["recordings"] = [_recording(rng, item, agent, n, started_s) for n, started_s in enumerate(starts)]
    return _Sale(item, agent, base_premium, formula, revised=False)


def _premium(base_premium: float, formula: int) -> float:
    return round(base_premium * FORMULA_FACTORS[formula], 2)


def _recording(rng: random.Random, item: JsonDict, agent: Agent, n: int, started_s: int) -> JsonDict:
    call_id = f"c-{item['fiche_id']}-{n + 1}"
    agent_line = GROUP_PHONE_PREFIXES[agent.groupe] + f"{int(agent.crm_user_id.removeprefix('u-')):04d}"
    prospect_phone = item["prospect"]["telephone"]
    outbound = rng.random() < 0.7
    return {
        "call_id": call_id,
        "recording_url": f"https://recordings.example/{call_id}.mp3",
        "started_at": _iso_z(date.fromisoformat(item["sales_date"]), started_s),
        "duration_seconds": rng.randint(25, 240) if rng.random() < 0.4 else rng.randint(240, 1800),
        "direction": "outbound" if outbound else "inbound",
        "from_number": agent_line if outbound else prospect_phone,
        "to_number": prospect_phone if outbound else agent_line,
    }


def _city(rng: random.Random, groupe: str) -> tuple[str, str]:
    """A prospect's (ville, code postal), most often in the agent's group's region."""
    region = GROUP_REGIONS[groupe]
    candidates = [c for c in CITIES if c[2] == region] if rng.random() < REGIONAL_PROSPECT_SHARE else CITIES
    ville, postcodes, _region = rng.choice(candidates)
    return ville, rng.choice(postcodes)


def _slug(name: str) -> str:
    """``"Lefèvre"`` -> ``"lefevre"``, ``"Da Silva"`` -> ``"dasilva"``: an email-safe name."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalnum())


def _iso_z(day: date, seconds_of_day: int) -> str:
    moment = datetime.combine(day, time()) + timedelta(seconds=seconds_of_day)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds_of_day(iso_z: str) -> int:
    moment = datetime.strptime(iso_z, "%Y-%m-%dT%H:%M:%SZ")
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def _birth_date(rng: random.Random, today: date, age: int) -> str:
    """A birth date of someone ``age`` years old on ``today``."""
    latest = today.replace(year=today.year - age, day=min(today.day, 28))  # day 28: no 29 February issue
    return (latest - timedelta(days=rng.randint(0, 364))).isoformat()


def _first_of_next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _mail_devis_html(rng: random.Random, sale: _Sale, tarification: list[JsonDict], date_effet: date) -> str:
    """The quote e-mail: a styled HTML mail of about 6 to 38 thousand characters."""
    item, prospect = sale.item, sale.item["prospect"]
    esc = partial(html.escape, quote=False)  # text content only
    formulas = [row["formule"] for row in tarification]
    target = rng.randint(MAIL_MIN_CHARS, MAIL_MAX_CHARS)
    parts = [
        '<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">',
        f"<title>Votre devis {esc(item['produit'])}</title><style>{MAIL_CSS}</style></head><body>",
        '<div class="wrapper"><div class="header">Votre devis personnalisé</div><div class="content">',
        f"<p>{'Madame' if prospect['civilite'] == 'Mme' else 'Monsieur'} {esc(prospect['nom'])},</p>",
        f"<p>Suite à notre échange téléphonique, j'ai le plaisir de vous adresser votre devis "
        f"<strong>{esc(item['produit'])}</strong> (référence {item['fiche_id']}), avec une date d'effet "
        f"au {date_effet:%d/%m/%Y}.</p>",
        '<table class="garanties"><tr><th>Formule</th><th>Cotisation mensuelle</th></tr>',
    ]
    for row in tarification:
        css = ' class="retenue"' if row["retenue"] else ""
        amount = f"{row['cotisation_mensuelle']:.2f}".replace(".", ",")
        parts.append(f"<tr{css}><td>{esc(row['formule'])}</td><td>{amount} €</td></tr>")
    parts.append('</table><h2>Tableau des garanties</h2><table class="garanties"><tr><th>Garantie</th>')
    parts.extend(f"<th>{esc(formula)}</th>" for formula in formulas)
    parts.append("</tr>")
    size = sum(map(len, parts))
    row_number = 0
    family = item["produit"].split()[0]
    garanties = GARANTIES[family]
    while size < target:  # as many guarantee lines (then worked examples) as the target size needs
        label = garanties[row_number % len(garanties)]
        if row_number >= len(garanties):
            label = f"Exemple {row_number - len(garanties) + 1} – {label} : {rng.randint(30, 2500)} € de frais"
        if family == "Santé":  # reimbursement levels, rising with the formula
            percents = sorted(rng.choice((100, 125, 150, 200, 250, 300, 400)) for _ in formulas)
            levels = [f"{percent} %" for percent in percents]
        else:  # included from some formula on, optional just below it
            first_included = rng.randint(0, len(formulas) - 1)
            levels = [
                "Inclus" if i >= first_included else "Option" if i == first_included - 1 else "—"
                for i in range(len(formulas))
            ]
        cells = "".join(f'<td style="text-align:right;padding:8px">{level}</td>' for level in levels)
        line = f'<tr><td style="padding:8px;border-bottom:1px solid #dde3ea">{esc(label)}</td>{cells}</tr>'
        parts.append(line)
        size += len(line)
        row_number += 1
    parts.append("</table>")
    parts.extend(f"<p>{esc(mention)}</p>" for mention in rng.sample(LEGAL_MENTIONS, 3))
    parts.append(
        f'<p><a class="cta" href="https://signature.example/{item["fiche_id"]}/{item["cle"]}">'
        f"Signer mon contrat</a></p><p>Je reste à votre disposition,<br>{esc(item['agent_name'])}<br>"
        f"Service commercial – équipe {esc(item['groupe'])}</p></div>"
        f'<div class="footer">{esc(LEGAL_MENTIONS[-1])}</div></div></body></html>'
    )
    return "".join(parts)
