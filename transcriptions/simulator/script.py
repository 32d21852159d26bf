"""Deterministic French insurance phone-sale transcripts, in ElevenLabs Scribe's response shape.

``transcript_for(call_id, seed=, crm_seed=)`` is the vendor's 200 body for a recording;
``truth_for(call_id, ...)`` says what the call holds, for tests and audits. Both are pure functions of
``(call_id, seed, crm_seed)``: every random draw comes from a ``random.Random`` seeded by a SHA-256 of its
parts (never ``hash()``, which is salted per process).

**The recording.** A call id of the CRM simulator (``c-<fiche_id>-<n>``) is looked up in
``fiches.simulator.data`` with ``crm_seed`` (revision 0 first, then the next few revisions, which may add
recordings): the audio lasts exactly its ``duration_seconds``, and the agent, prospect, product, formula,
monthly premium, start date and call direction are those of the CRM fiche. Any other id gets a duration and
a cast derived from a hash. ``audio_duration_secs`` always equals ``truth["duration"]``.

**The call.** A full call (``FULL_CALL_MIN_SECONDS`` or more) is built from the scripted segments of
``SEGMENT_KEYS`` (each with several wordings) in a plausible order, then filled with small talk,
needs-analysis and product questions until words span the whole audio at about ``WORDS_PER_SECOND``.
Most calls are compliant; some miss a mandatory segment (``missing``: the statement is absent, and none of
its ``SEGMENT_TERMS[key].trace`` terms appears anywhere in the call), some contradict one
(``contradicted``: the agent says the opposite, with one of its ``contradiction`` terms). Shorter calls are a
voicemail, a call-back request or a refusal (``truth["kind"]``): their other segments are ``missing``.

**ASR realism.** Two diarized speakers ``speaker_0``/``speaker_1`` (which one is the agent varies, and on
some outbound calls the client speaks first: "Allô ?"), words with ``start``/``end``/``logprob``, spacing
items between words, punctuation attached to words, sometimes a lowercase start, a missing final
punctuation, fillers ("euh", "bah"), amounts sometimes in digits and sometimes in words.

**Audits.** ``SEGMENT_TERMS`` documents, for each segment key, the words every compliant wording holds
(``required``: each group needs one of its alternatives), the words whose absence marks a missing segment
(``trace``) and the phrases that mark a contradiction. Terms are accent- and case-insensitive and match at a
word start (``contains_term``).
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from fiches.simulator import data as crm_data
from fiches.simulator.roster import AGENTS

# --- Segment keys and what an auditor looks for -------------------------------------------------------

IDENTITY = "identity"  # agent's name, company, that it is a courtier, ORIAS number
COMMERCIAL_PURPOSE = "commercial_purpose"  # "cet appel est un appel commercial"
CONSENT = "consent"  # the client accepts to go on ("acceptez-vous de poursuivre ?")
RECORDING_NOTICE = "recording_notice"  # recorded, kept two years, copy on request, refusing ends the call
NEEDS_ANALYSIS = "needs_analysis"  # situation, current cover, cancellation of the existing contract
OFFER = "offer"  # product, guarantees, monthly price, start date
WITHDRAWAL = "withdrawal"  # 14-day withdrawal right ("délai de rétractation de quatorze jours")
DOCUMENTS_BEFORE_SIGNATURE = "documents_before_signature"  # documents sent by e-mail before any signature
NO_PHONE_SIGNATURE = "no_phone_signature"  # no signature and no code by phone
CLOSING = "closing"  # recap and goodbye

SEGMENT_KEYS: tuple[str, ...] = (
    IDENTITY,
    COMMERCIAL_PURPOSE,
    CONSENT,
    RECORDING_NOTICE,
    NEEDS_ANALYSIS,
    OFFER,
    WITHDRAWAL,
    DOCUMENTS_BEFORE_SIGNATURE,
    NO_PHONE_SIGNATURE,
    CLOSING,
)
CONTRADICTABLE: tuple[str, ...] = (
    IDENTITY,
    COMMERCIAL_PURPOSE,
    CONSENT,
    RECORDING_NOTICE,
    WITHDRAWAL,
    DOCUMENTS_BEFORE_SIGNATURE,
    NO_PHONE_SIGNATURE,
)
OK, MISSING, CONTRADICTED = "ok", "missing", "contradicted"
VARIANTS: tuple[str, ...] = (OK, MISSING, CONTRADICTED)
KIND_FULL, KIND_CALLBACK, KIND_REFUSAL, KIND_VOICEMAIL = "full", "callback", "refusal", "voicemail"


@dataclass(frozen=True)
class SegmentTerms:
    """Normalized terms (see ``contains_term``) of one segment.

    ``required``: every ``ok`` wording holds one term of each group. ``trace``: none of these appears anywhere
    in a call where the segment is ``missing``. ``contradiction``: every ``contradicted`` wording holds one.
    """

    required: tuple[tuple[str, ...], ...]
    trace: tuple[str, ...]
    contradiction: tuple[str, ...] = ()


SEGMENT_TERMS: dict[str, SegmentTerms] = {
    IDENTITY: SegmentTerms(
        required=(("orias",), ("courtier",)),
        trace=("orias", "courtier", "courtage"),
        contradiction=("de la part de votre assureur", "votre assureur actuel"),
    ),
    COMMERCIAL_PURPOSE: SegmentTerms(
        required=(("appel commercial",),),
        trace=("commercial", "demarchage", "prospection"),
        contradiction=("pas un appel commercial", "pas du demarchage"),
    ),
    CONSENT: SegmentTerms(
        required=(("poursui",), ("accept", "d accord")),
        trace=("poursui",),
        contradiction=("je continue quand meme", "on continue quand meme"),
    ),
    RECORDING_NOTICE: SegmentTerms(
        required=(("enregistr",), ("conserv",), ("deux ans", "2 ans"), ("copie",), ("refus",)),
        trace=("enregistr", "conserv", "copie"),
        contradiction=("n est pas conserve", "pas en avoir de copie"),
    ),
    NEEDS_ANALYSIS: SegmentTerms(
        required=(("situation",), ("actuellement",), ("resili",)),
        trace=("resili", "actuellement", "votre situation"),
    ),
    OFFER: SegmentTerms(
        required=(("garantie",), ("par mois",), ("debut", "date d effet")),
        trace=("par mois", "garantie", "tarif", "cotisation"),
    ),
    WITHDRAWAL: SegmentTerms(
        required=(("retractation",), ("quatorze jours", "14 jours")),
        trace=("retractation", "renonc", "quatorze jours", "14 jours"),
        contradiction=("pas de delai de retractation", "pas de retractation", "quarante huit heures", "48 heures"),
    ),
    DOCUMENTS_BEFORE_SIGNATURE: SegmentTerms(
        required=(("e mail", "email"), ("avant toute signature", "avant de signer"), ("document",)),
        trace=("mail", "email", "avant toute signature", "avant de signer"),
        contradiction=("apres la signature", "pas besoin de les lire"),
    ),
    NO_PHONE_SIGNATURE: SegmentTerms(
        required=(("aucune signature par telephone",), ("code",)),
        trace=("aucune signature", "signature par telephone", "code", "sms"),
        contradiction=("code par sms", "me le lisez", "me le donner"),
    ),
    CLOSING: SegmentTerms(
        required=(("recapitul",), ("au revoir", "bonne journee", "bonne soiree")),
        trace=("recapitul",),
    ),
}


@dataclass(frozen=True)
class Company:
    name: str
    orias: str  # as an auditor reads it: "07 012 345"


COMPANIES: tuple[Company, ...] = (
    Company("Horizon Courtage", "07 012 345"),
    Company("Sérénis Conseil", "09 051 776"),
    Company("Assur'Avenir", "13 008 921"),
    Company("Azur Patrimoine Assurances", "15 002 318"),
    Company("Lefort et Associés", "12 065 437"),
)
COMPANY_NAMES: tuple[str, ...] = tuple(company.name for company in COMPANIES)
# The company each CRM group sells for (ids of another origin draw one from a hash).
GROUP_COMPANIES: dict[str, Company] = {
    "Lyon-1": COMPANIES[0],
    "Lyon-2": COMPANIES[1],
    "Paris-Est": COMPANIES[2],
    "Marseille": COMPANIES[3],
    "Lille-Nord": COMPANIES[4],
}

DEFAULT_SEED = 42
DEFAULT_CRM_SEED = 42
WORDS_PER_SECOND = 2.3
FULL_CALL_MIN_SECONDS = 150
CRM_REVISIONS_SEARCHED = 4  # revisions 0..3: later revisions may add a recording to a sale
CALL_ID_RE = re.compile(r"^c-(?P<fiche_id>\d{1,12})-(?P<n>\d{1,2})$")
RECORDING_URL_PREFIX = "https://recordings.example/"
SHARE_COMPLIANT = 0.68
SHARE_MISSING = 0.19  # the rest contradict
SHARE_TWO_PROBLEMS = 0.15  # of the non-compliant calls
AGENT, CLIENT = "A", "C"


# --- Text helpers -------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lowercase, accents removed, every run of non-alphanumeric characters (apostrophes too) one space."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", stripped).split())


def contains_term(text: str, term: str) -> bool:
    """Whether normalized ``term`` occurs in ``text`` starting at a word start (``resili`` matches ``résilier``)."""
    return re.search(rf"(?:^|\s){re.escape(normalize(term))}", normalize(text)) is not None


_UNITS = (
    "zéro",
    "un",
    "deux",
    "trois",
    "quatre",
    "cinq",
    "six",
    "sept",
    "huit",
    "neuf",
    "dix",
    "onze",
    "douze",
    "treize",
    "quatorze",
    "quinze",
    "seize",
    "dix-sept",
    "dix-huit",
    "dix-neuf",
)
_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def french_number(n: int) -> str:
    """``84`` -> ``"quatre-vingt-quatre"`` (traditional spelling), for 0 <= n < 1,000,000."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"out of range: {n}")
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        if tens in (7, 9):  # soixante-dix..., quatre-vingt-dix...
            base = "soixante" if tens == 7 else "quatre-vingt"
            return f"{base}{' et ' if n == 71 else '-'}{_UNITS[10 + unit]}"
        if tens == 8:
            return "quatre-vingts" if unit == 0 else f"quatre-vingt-{_UNITS[unit]}"
        if unit == 0:
            return _TENS[tens]
        return f"{_TENS[tens]}{' et ' if unit == 1 else '-'}{_UNITS[unit]}"
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = "cent" if hundreds == 1 else f"{_UNITS[hundreds]} cent{'s' if rest == 0 else ''}"
        return head if rest == 0 else f"{head} {french_number(rest)}"
    thousands, rest = divmod(n, 1000)
    # "quatre-vingt mille", "deux cent mille": no plural s before "mille" (but "trois", "six" keep theirs)
    head = "mille" if thousands == 1 else f"{re.sub(r'(vingt|cent)s$', r'\g<1>', french_number(thousands))} mille"
    return head if rest == 0 else f"{head} {french_number(rest)}"


_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def _say_number(n: int, rng: random.Random, *, words_share: float = 0.4) -> str:
    return french_number(n) if rng.random() < words_share else str(n)


def _say_price(amount: float, rng: random.Random) -> str:
    """``84.5`` -> ``84,50 euros`` / ``84 euros 50`` / ``quatre-vingt-quatre euros cinquante``."""
    euros, cents = divmod(round(amount * 100), 100)
    style = rng.random()
    if style < 0.5:
        return f"{euros},{cents:02d} euros" if cents else f"{euros} euros"
    if style < 0.75:
        return f"{euros} euros {cents:02d}" if cents else f"{euros} euros"
    return f"{french_number(euros)} euros {french_number(cents)}" if cents else f"{french_number(euros)} euros"


def _say_date(day: date, rng: random.Random) -> str:
    number = ("1er" if rng.random() < 0.6 else "premier") if day.day == 1 else _say_number(day.day, rng)
    year = f" {day.year}" if rng.random() < 0.4 else ""
    return f"{number} {_MONTHS[day.month - 1]}{year}"


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


# --- Library of scripted segments ---------------------------------------------------------------------
# A wording is a tuple of lines (speaker, template). Templates use {slots} filled from the call's context;
# some slots ({yes}, {ack}...) draw a fresh value at each use.

Line = tuple[str, str]
Wording = tuple[Line, ...]

PICKUPS: tuple[str, ...] = ("Allô ?", "Oui allô ?", "Allô oui ?", "Oui ?", "Allô, j'écoute ?", "Oui, allô ?")

IDENTITY_OUTBOUND: dict[str, tuple[Wording, ...]] = {
    OK: (
        (
            (
                AGENT,
                (
                    "Bonjour {civ} {nom}, je m'appelle {agent}, je vous appelle de la part du cabinet {company}. "
                    "Nous sommes courtier en assurances, immatriculé à l'ORIAS sous le numéro {orias}."
                ),
            ),
            (CLIENT, "{hello}"),
        ),
        (
            (
                AGENT,
                (
                    "Oui bonjour {civ} {nom}, {agent}, de {company}. Je suis courtier en assurance, numéro ORIAS "
                    "{orias}, je vous appelle suite à votre demande de devis."
                ),
            ),
            (CLIENT, "{hello}"),
        ),
        (
            (AGENT, "Bonjour, {civ} {nom} ?"),
            (CLIENT, "Oui, c'est moi."),
            (
                AGENT,
                (
                    "{first} à l'appareil, de {company}. Nous sommes un cabinet de courtage, courtier en "
                    "assurances, numéro ORIAS {orias}."
                ),
            ),
        ),
    ),
    MISSING: (
        (
            (AGENT, "Bonjour {civ} {nom}, je vous appelle suite à votre demande de devis sur internet."),
            (CLIENT, "Ah oui, bonjour."),
        ),
        (
            (AGENT, "Oui bonjour {civ} {nom}, c'est au sujet de la demande de devis que vous avez faite."),
            (CLIENT, "{hello}"),
        ),
    ),
    CONTRADICTED: (
        (
            (
                AGENT,
                (
                    "Bonjour {civ} {nom}, {first} à l'appareil, je vous appelle de la part de votre assureur, "
                    "{insurer}, pour faire le point sur votre contrat."
                ),
            ),
            (CLIENT, "Ah, d'accord, bonjour."),
        ),
        (
            (
                AGENT,
                ("Bonjour {civ} {nom}, je suis {first}, du service des contrats de {insurer}, votre assureur actuel."),
            ),
            (CLIENT, "Ah oui ? Bonjour."),
        ),
    ),
}
IDENTITY_INBOUND: dict[str, tuple[Wording, ...]] = {
    OK: (
        (
            (AGENT, "{company}, bonjour, {first} à l'appareil."),
            (CLIENT, "Oui bonjour, je vous appelle pour le devis que j'ai demandé sur internet."),
            (
                AGENT,
                (
                    "Très bien. Alors je me présente, {agent}, je suis courtier en assurances chez {company}, "
                    "numéro ORIAS {orias}. C'est à quel nom ?"
                ),
            ),
            (CLIENT, "{Civ} {nom}."),
        ),
        (
            (AGENT, "Cabinet {company}, {agent}, bonjour !"),
            (CLIENT, "Bonjour, on m'a laissé un message pour un devis."),
            (
                AGENT,
                (
                    "Oui, tout à fait. Nous sommes courtier en assurance, immatriculé à l'ORIAS sous le numéro "
                    "{orias}. Vous êtes {civ} ?"
                ),
            ),
            (CLIENT, "{Civ} {nom}, oui."),
        ),
    ),
    MISSING: (
        (
            (AGENT, "Allô, bonjour !"),
            (CLIENT, "Oui bonjour, je vous appelle pour le devis que j'ai demandé sur internet."),
            (AGENT, "Oui, très bien, c'est à quel nom ?"),
            (CLIENT, "{Civ} {nom}."),
        ),
    ),
    CONTRADICTED: (
        (
            (AGENT, "Bonjour, {first} à l'appareil, service des contrats de {insurer}, votre assureur actuel."),
            (CLIENT, "Ah, bonjour, je rappelle suite à votre message."),
            (AGENT, "Oui, c'est à quel nom ?"),
            (CLIENT, "{Civ} {nom}."),
        ),
    ),
}

SEGMENTS: dict[str, dict[str, tuple[Wording, ...]]] = {
    COMMERCIAL_PURPOSE: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Je vous précise que cet appel est un appel commercial, il a pour objet de vous présenter "
                        "une offre {of_family}."
                    ),
                ),
            ),
            (
                (
                    AGENT,
                    (
                        "Je dois vous le dire, il s'agit d'un appel commercial, pour vous proposer une {family} mieux "
                        "adaptée."
                    ),
                ),
            ),
            (
                (AGENT, "C'est un appel commercial, l'objet c'est de vous faire une proposition {of_family}."),
                (CLIENT, "{ack}"),
            ),
        ),
        CONTRADICTED: (
            (
                (
                    AGENT,
                    (
                        "Rassurez-vous, ce n'est pas un appel commercial, c'est simplement pour mettre à jour votre "
                        "dossier."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
            (
                (AGENT, "Ce n'est pas du démarchage, hein, je ne vous vends rien, c'est juste une vérification."),
                (CLIENT, "Ah bon, d'accord."),
            ),
        ),
    },
    CONSENT: {
        OK: (
            ((AGENT, "Est-ce que vous acceptez de poursuivre cet appel ?"), (CLIENT, "{consent_yes}")),
            (
                (AGENT, "Vous êtes d'accord pour que nous poursuivions l'échange quelques minutes ?"),
                (CLIENT, "{consent_yes}"),
            ),
            ((AGENT, "Acceptez-vous de poursuivre la conversation ?"), (CLIENT, "{consent_yes}")),
        ),
        CONTRADICTED: (
            (
                (AGENT, "Est-ce que vous acceptez de poursuivre cet appel ?"),
                (CLIENT, "Non, là franchement ça ne m'intéresse pas."),
                (AGENT, "Je comprends, mais je vous prends juste deux minutes, je continue quand même."),
                (CLIENT, "Bon..."),
            ),
            (
                (AGENT, "Vous acceptez de poursuivre la conversation ?"),
                (CLIENT, "Euh non, je préfère pas, je suis occupé{e}."),
                (AGENT, "Ce sera très rapide, on continue quand même, vous allez voir."),
                (CLIENT, "Bon, allez-y."),
            ),
        ),
    },
    RECORDING_NOTICE: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Je vous informe que cet appel est enregistré. L'enregistrement est conservé {deux_ans}, vous "
                        "pouvez en obtenir une copie sur simple demande, et si vous refusez l'enregistrement, l'appel "
                        "s'arrête là."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
            (
                (
                    AGENT,
                    (
                        "Avant d'aller plus loin, notre conversation est enregistrée. L'enregistrement sera conservé "
                        "pendant {deux_ans}, une copie vous sera transmise si vous la demandez, et si vous refusez "
                        "d'être enregistré, je mets fin à l'appel. Ça vous va ?"
                    ),
                ),
                (CLIENT, "{yes}"),
            ),
            (
                (
                    AGENT,
                    (
                        "Petite information obligatoire, l'appel est enregistré, l'enregistrement est conservé "
                        "{deux_ans} et vous pouvez en demander une copie. Vous pouvez refuser, dans ce cas on arrête "
                        "l'appel."
                    ),
                ),
                (CLIENT, "Non, non, c'est bon, allez-y."),
            ),
        ),
        CONTRADICTED: (
            (
                (
                    AGENT,
                    (
                        "Cet appel est enregistré, mais rassurez-vous, l'enregistrement n'est pas conservé, il est "
                        "effacé juste après."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
            (
                (
                    AGENT,
                    (
                        "L'appel est enregistré pour la qualité, par contre vous ne pourrez pas en avoir de copie, "
                        "c'est interne."
                    ),
                ),
                (CLIENT, "Ah, d'accord."),
            ),
        ),
    },
    NEEDS_ANALYSIS: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Pour bien vous conseiller, j'ai besoin de connaître votre situation. Vous êtes actuellement "
                        "assuré{e} chez qui ?"
                    ),
                ),
                (CLIENT, "Chez {insurer}, depuis {years} ans."),
                (
                    AGENT,
                    (
                        "D'accord. Et si notre proposition vous convient, vous souhaitez résilier ce contrat ? Nous "
                        "pouvons nous occuper de la résiliation pour vous."
                    ),
                ),
                (CLIENT, "Oui, ce serait bien."),
            ),
            (
                (AGENT, "Parlez-moi un peu de votre situation. Qui est couvert aujourd'hui, et par quel contrat ?"),
                (CLIENT, "Bah moi et mon conjoint, on est chez {insurer}."),
                (
                    AGENT,
                    (
                        "Vous êtes donc actuellement couverts chez {insurer}. Il faudra résilier ce contrat existant, "
                        "avec la loi Hamon la résiliation est simple, on s'en charge."
                    ),
                ),
                (CLIENT, "Ah oui, je veux bien."),
            ),
            (
                (
                    AGENT,
                    (
                        "Alors, pour comprendre votre situation, vous avez actuellement un contrat chez {insurer}, "
                        "c'est bien ça ?"
                    ),
                ),
                (CLIENT, "Oui, depuis {years} ans à peu près."),
                (AGENT, "Très bien. Est-ce que vous voulez qu'on s'occupe de la résiliation de ce contrat ?"),
                (CLIENT, "Oui, si c'est possible."),
            ),
        ),
    },
    OFFER: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Alors je vous propose {product}, formule {formula}. Les garanties principales sont {g1}, {g2} "
                        "et {g3}. Le tarif est de {price} par mois, et le contrat peut débuter le {date_effet}."
                    ),
                ),
                (CLIENT, "{price_reaction}"),
            ),
            (
                (
                    AGENT,
                    (
                        "Ce que je peux vous proposer, c'est {product} en formule {formula}, avec comme garanties "
                        "{g1}, {g2} et aussi {g3}. Ça vous revient à {price} par mois, avec une date d'effet au "
                        "{date_effet}."
                    ),
                ),
                (CLIENT, "{price_reaction}"),
            ),
            (
                (AGENT, "Pour vous, la meilleure option c'est {product}, la formule {formula}."),
                (CLIENT, "Et qu'est-ce qu'il y a dedans ?"),
                (
                    AGENT,
                    (
                        "Vous avez les garanties {g1}, {g2} et {g3}, pour {price} par mois, et un début de contrat "
                        "le {date_effet}."
                    ),
                ),
                (CLIENT, "{price_reaction}"),
            ),
        ),
    },
    WITHDRAWAL: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Vous disposez d'un délai de rétractation de {quatorze} jours à compter de la souscription, "
                        "sans frais et sans avoir à vous justifier."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
            (
                (
                    AGENT,
                    (
                        "Je vous rappelle aussi votre droit de rétractation, vous avez {quatorze} jours pour changer "
                        "d'avis, sans aucune pénalité."
                    ),
                ),
                (CLIENT, "D'accord, c'est bon à savoir."),
            ),
            (
                (
                    AGENT,
                    (
                        "Et bien sûr, vous avez {quatorze} jours de rétractation, si vous changez d'avis un simple "
                        "courrier de renonciation suffit."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
        ),
        CONTRADICTED: (
            (
                (
                    AGENT,
                    (
                        "Par contre, sur ce contrat, vous n'avez pas de délai de rétractation, une fois que c'est "
                        "validé c'est définitif."
                    ),
                ),
                (CLIENT, "Ah bon ? D'accord."),
            ),
            (
                (AGENT, "La rétractation, c'est seulement quarante-huit heures, donc il faut bien réfléchir avant."),
                (CLIENT, "{ack}"),
            ),
            (
                (AGENT, "Il n'y a pas de rétractation possible après aujourd'hui, je préfère vous le dire."),
                (CLIENT, "Ah, d'accord."),
            ),
        ),
    },
    DOCUMENTS_BEFORE_SIGNATURE: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Vous allez recevoir par e-mail les documents du contrat, le devis, les conditions générales "
                        "et la fiche d'information, tout ça avant toute signature, pour que vous puissiez les lire "
                        "tranquillement."
                    ),
                ),
                (CLIENT, "D'accord, je regarderai."),
            ),
            (
                (
                    AGENT,
                    (
                        "Je vous envoie dès maintenant les documents par e-mail, avant toute signature, prenez le "
                        "temps de les lire."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
            (
                (
                    AGENT,
                    (
                        "Vous recevrez d'abord tous les documents par email, avec les conditions générales, et vous "
                        "les lirez avant de signer quoi que ce soit."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
        ),
        CONTRADICTED: (
            (
                (AGENT, "Les documents, vous les recevrez après la signature, c'est plus simple comme ça."),
                (CLIENT, "Ah, bon, d'accord."),
            ),
            (
                (AGENT, "On valide d'abord, et je vous envoie les papiers ensuite, pas besoin de les lire avant."),
                (CLIENT, "{ack}"),
            ),
        ),
    },
    NO_PHONE_SIGNATURE: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Je précise qu'il n'y a aucune signature par téléphone, je ne vous demanderai aucun code, vous "
                        "signerez vous-même en ligne, si vous le décidez."
                    ),
                ),
                (CLIENT, "{ack}"),
            ),
            (
                (
                    AGENT,
                    (
                        "Et c'est important, aucune signature par téléphone, et aucun code à me communiquer. La "
                        "signature, c'est vous qui la ferez, plus tard."
                    ),
                ),
                (CLIENT, "D'accord, très bien."),
            ),
            (
                (
                    AGENT,
                    ("Rien ne se signe aujourd'hui, aucune signature par téléphone, et vous ne me donnez aucun code."),
                ),
                (CLIENT, "{ack}"),
            ),
        ),
        CONTRADICTED: (
            (
                (
                    AGENT,
                    (
                        "Je vais vous envoyer un code par SMS, vous me le lisez et ça valide votre signature tout de "
                        "suite."
                    ),
                ),
                (CLIENT, "Euh, d'accord, attendez... c'est {sms_code}."),
                (AGENT, "Parfait, c'est validé."),
            ),
            (
                (
                    AGENT,
                    (
                        "Vous allez recevoir un SMS avec un code, vous pouvez me le donner ? C'est pour signer le "
                        "contrat."
                    ),
                ),
                (CLIENT, "Alors, {sms_code}."),
                (AGENT, "Merci, c'est signé."),
            ),
        ),
    },
    CLOSING: {
        OK: (
            (
                (
                    AGENT,
                    (
                        "Je récapitule, {product}, formule {formula}{price_part}, début du contrat le {date_effet}. "
                        "Vous avez d'autres questions ?"
                    ),
                ),
                (CLIENT, "Non, c'est bon, merci."),
                (AGENT, "Merci à vous {civ} {nom}, je vous souhaite une bonne journée, au revoir."),
                (CLIENT, "Au revoir."),
            ),
            (
                (
                    AGENT,
                    (
                        "Alors pour récapituler, vous partez sur {product} en formule {formula}{price_part}, avec un "
                        "début le {date_effet}. Est-ce que tout est clair pour vous ?"
                    ),
                ),
                (CLIENT, "Oui, tout est clair."),
                (AGENT, "Parfait. Bonne journée {civ} {nom}, au revoir."),
                (CLIENT, "Merci, au revoir."),
            ),
        ),
        MISSING: (
            ((AGENT, "Bon, bah voilà, à bientôt alors."), (CLIENT, "Oui, au revoir.")),
            ((AGENT, "Très bien, je vous laisse, bonne fin de journée."), (CLIENT, "Merci, vous aussi.")),
        ),
    },
}

CALLBACK_LINES: tuple[Wording, ...] = (
    (
        (CLIENT, "Ah, là je ne suis pas disponible, vous pouvez me rappeler plus tard ?"),
        (AGENT, "Bien sûr, je vous rappelle {when}. Bonne journée {civ} {nom}."),
        (CLIENT, "Merci, au revoir."),
    ),
    (
        (CLIENT, "Écoutez, je suis au volant, là, rappelez-moi {when}."),
        (AGENT, "Pas de problème, je vous rappelle {when}. Au revoir {civ} {nom}."),
        (CLIENT, "Au revoir."),
    ),
)
REFUSAL_LINES: tuple[Wording, ...] = (
    (
        (CLIENT, "Non merci, je ne suis pas intéressé{e}."),
        (AGENT, "Très bien, je n'insiste pas. Je vous souhaite une bonne journée, au revoir."),
        (CLIENT, "Au revoir."),
    ),
    (
        (CLIENT, "Non, non, ça ira, merci."),
        (AGENT, "Entendu, je n'insiste pas, bonne journée {civ} {nom}."),
    ),
)
VOICEMAIL_LINES: tuple[Wording, ...] = (
    (
        (
            AGENT,
            (
                "Bonjour {civ} {nom}, {agent}, du cabinet {company}, courtier en assurances, numéro ORIAS {orias}. "
                "Je vous appelais au sujet de votre demande de devis, je vous rappellerai {when}. Bonne journée."
            ),
        ),
    ),
    (
        (
            AGENT,
            (
                "Oui bonjour {civ} {nom}, c'est {agent} de {company}, courtier en assurance, ORIAS {orias}. Je "
                "rappellerai {when} pour votre devis, au revoir."
            ),
        ),
    ),
)

# --- Filler (never holds a segment's trace terms, except needs filler -> needs, product filler -> offer) ---

SMALL_TALK: tuple[Wording, ...] = (
    ((AGENT, "Vous m'entendez bien ? La ligne coupe un peu."), (CLIENT, "Oui, oui, je vous entends.")),
    ((AGENT, "Je patiente deux secondes, mon ordinateur est un peu lent ce matin."), (CLIENT, "Pas de souci.")),
    ((CLIENT, "Excusez-moi, j'ai le chien qui aboie."), (AGENT, "Ah, ça ne me dérange pas du tout.")),
    (
        (AGENT, "Vous êtes sur {city}, c'est bien ça ?"),
        (CLIENT, "Oui, enfin juste à côté."),
        (AGENT, "Ah, c'est joli par là-bas."),
        (CLIENT, "Oui, on est bien."),
    ),
    ((CLIENT, "Attendez, je baisse la télé."), (AGENT, "Je vous en prie, prenez votre temps.")),
    (
        (AGENT, "Il fait beau chez vous aujourd'hui ?"),
        (CLIENT, "Bah ça va, un peu de pluie ce matin."),
        (AGENT, "Ici c'est pareil, on n'a pas de chance cette semaine."),
    ),
    ((AGENT, "Je vérifie un petit point sur mon écran, voilà, ça charge."), (CLIENT, "{ack}")),
    (
        (CLIENT, "Pardon, vous pouvez répéter ? Il y avait du bruit."),
        (AGENT, ("Oui bien sûr, je disais que je regarde ça tout de suite.")),
    ),
    (
        (AGENT, "Vous êtes plutôt du matin ou du soir, pour qu'on se reparle si besoin ?"),
        (CLIENT, "Plutôt en fin de journée, après le travail."),
    ),
    (
        (CLIENT, "Ça prend longtemps en général, ce genre de démarche ?"),
        (AGENT, "Non, non, c'est assez rapide, on fait au plus simple pour vous."),
    ),
    (
        (AGENT, "Et vous êtes dans la région depuis longtemps ?"),
        (CLIENT, "Ça fait {years} ans maintenant, on est venus pour le travail de mon conjoint."),
        (AGENT, "Ah, c'est bien, c'est une belle région."),
    ),
    (
        (CLIENT, "Mes enfants m'ont dit de faire attention au téléphone, vous savez."),
        (AGENT, "Et ils ont raison, vous faites bien d'être prudent{e}."),
        (CLIENT, "{ack}"),
    ),
    ((AGENT, "Je note tout ça, une petite seconde."), (CLIENT, "Oui, oui, allez-y.")),
    (
        (CLIENT, "Vous travaillez le samedi aussi ?"),
        (AGENT, "Le samedi matin oui, l'après-midi c'est fermé."),
        (CLIENT, "Ah d'accord."),
    ),
    ((AGENT, "Vous m'excusez, j'ai un collègue qui parle fort à côté."), (CLIENT, "Non, ça va, je vous entends.")),
    (
        (CLIENT, "Ah, on sonne à la porte, vous pouvez patienter une minute ?"),
        (AGENT, "Bien sûr, je reste en ligne."),
        (CLIENT, "Voilà, c'était le facteur, excusez-moi."),
        (AGENT, "Aucun problème."),
    ),
    (
        (AGENT, "Vous avez passé un bon week-end ?"),
        (CLIENT, "Oui, on était chez ma fille, c'était bien."),
        (AGENT, "Ah, ça fait plaisir ça."),
    ),
    (
        (CLIENT, "Bon, on en a pour longtemps encore ? J'ai un rendez-vous tout à l'heure."),
        (AGENT, "Non, rassurez-vous, on a bientôt fait le tour."),
        (CLIENT, "{ack}"),
    ),
    ((AGENT, "Le système met un peu de temps, je m'excuse."), (CLIENT, "Y a pas de mal.")),
    (
        (CLIENT, "C'est vous qui m'aviez appelé{e} la semaine dernière ?"),
        (AGENT, "Non, ça devait être un collègue, mais j'ai bien votre dossier sous les yeux."),
        (CLIENT, "{ack}"),
    ),
    (
        (AGENT, "Vous voulez qu'on fasse une petite pause, vous avez le temps ?"),
        (CLIENT, "Non, non, ça va, on peut continuer."),
    ),
    (
        (CLIENT, "Et vous êtes basés où, vous ?"),
        (AGENT, ("Nous sommes à {agent_city}, mais on travaille avec toute la France.")),
        (CLIENT, "Ah d'accord."),
    ),
)

NEEDS_FILLER_COMMON: tuple[Wording, ...] = (
    ((AGENT, "Vous êtes en activité, ou à la retraite ?"), (CLIENT, "{work}")),
    ((AGENT, "Et vous avez quel âge, si ce n'est pas indiscret ?"), (CLIENT, "{age} ans.")),
    (
        (AGENT, "Vous vivez seul{e} ou en couple ?"),
        (CLIENT, "En couple, avec mon conjoint."),
        (AGENT, "D'accord, je note."),
    ),
    ((AGENT, "Vous avez des enfants à charge ?"), (CLIENT, "{children}")),
    (
        (AGENT, "Qu'est-ce qui ne vous convient pas dans votre contrat actuel ?"),
        (CLIENT, "Bah c'est le prix surtout, ça augmente tous les ans."),
        (AGENT, "C'est ce que j'entends souvent, oui."),
    ),
    ((AGENT, "Et quel budget vous aviez en tête, à peu près ?"), (CLIENT, "Pas plus de {budget} euros, je pense.")),
    ((AGENT, "Vous avez déjà eu des sinistres ces dernières années ?"), (CLIENT, "Non, rien du tout.")),
    (
        (AGENT, "Vous êtes satisfait{e} de votre conseiller chez {insurer} ?"),
        (CLIENT, "Bof, on ne le voit jamais, on n'a jamais de réponse."),
    ),
    (
        (AGENT, "Est-ce qu'il y a des choses qui comptent particulièrement pour vous ?"),
        (CLIENT, "Être bien remboursé{e}, et pas avoir de mauvaise surprise."),
    ),
    ((AGENT, "Vous avez votre échéance quand, sur votre contrat actuel ?"), (CLIENT, "En {month}, je crois.")),
)
NEEDS_FILLER: dict[str, tuple[Wording, ...]] = {
    "Santé": (
        ((AGENT, "Vous portez des lunettes ?"), (CLIENT, "Oui, et mon conjoint aussi, des verres progressifs.")),
        (
            (AGENT, "Côté dentaire, vous avez des soins prévus ?"),
            (CLIENT, "Oui, il faudrait une couronne, le dentiste m'a fait un devis."),
            (AGENT, "D'accord, je note."),
        ),
        ((AGENT, "Vous consultez souvent des spécialistes ?"), (CLIENT, "Un cardiologue une fois par an, c'est tout.")),
        ((AGENT, "Vous avez une hospitalisation de prévue ?"), (CLIENT, "Non, non, pas pour l'instant.")),
        (
            (AGENT, "Et les médecines douces, ostéopathe, ça vous intéresse ?"),
            (CLIENT, "Oui, j'y vais deux ou trois fois par an pour le dos."),
        ),
    ),
    "Obsèques": (
        (
            (AGENT, "Vous avez déjà pensé à l'organisation, inhumation ou crémation ?"),
            (CLIENT, "Plutôt crémation, je ne veux pas embêter mes enfants."),
        ),
        ((AGENT, "Vous souhaitez que le capital aille à qui ?"), (CLIENT, "À mes enfants, moitié moitié.")),
        (
            (AGENT, "Vous avez une idée du montant que vous voulez prévoir ?"),
            (CLIENT, "Autour de {budget_big} euros, je pense que ça suffit."),
        ),
    ),
    "Prévoyance": (
        ((AGENT, "Vous travaillez dans quel secteur ?"), (CLIENT, "Dans le bâtiment, je suis à mon compte.")),
        (
            (AGENT, "En cas d'arrêt de travail, vous toucheriez quoi aujourd'hui ?"),
            (CLIENT, "Pas grand-chose, c'est pour ça que je regarde."),
        ),
        ((AGENT, "Vous avez un crédit immobilier en cours ?"), (CLIENT, "Oui, encore {years} ans à payer.")),
    ),
    "Auto": (
        ((AGENT, "C'est quel véhicule ?"), (CLIENT, "Une Clio de {year}, diesel."), (AGENT, "D'accord.")),
        ((AGENT, "Vous faites combien de kilomètres par an ?"), (CLIENT, "Dans les {km} kilomètres à peu près.")),
        ((AGENT, "Vous avez un bonus de combien ?"), (CLIENT, "Cinquante pour cent, le maximum.")),
        ((AGENT, "Le véhicule dort dans un garage ?"), (CLIENT, "Oui, un garage fermé.")),
    ),
    "Habitation": (
        ((AGENT, "Vous êtes propriétaire ou locataire ?"), (CLIENT, "Propriétaire, depuis {years} ans.")),
        ((AGENT, "C'est une maison ou un appartement ?"), (CLIENT, "Une maison, avec un petit jardin.")),
        ((AGENT, "Combien de pièces principales ?"), (CLIENT, "{rooms} pièces.")),
        ((AGENT, "Vous avez des objets de valeur, des bijoux ?"), (CLIENT, "Non, pas vraiment.")),
    ),
}
PRODUCT_FILLER_COMMON: tuple[Wording, ...] = (
    (
        (CLIENT, "Et le prix, il bouge chaque année ?"),
        (AGENT, "Il peut être révisé à l'échéance, mais on vous prévient toujours avant."),
    ),
    (
        (CLIENT, "Et s'il y a un problème, j'appelle qui ?"),
        (AGENT, "Vous avez un numéro dédié, et votre espace en ligne, et vous pouvez aussi me joindre directement."),
    ),
    (
        (CLIENT, "C'est vous qui gérez, ou c'est l'assureur ?"),
        (
            AGENT,
            (
                "Nous, on vous accompagne, et l'assureur gère les remboursements et les dossiers. Si vous avez le "
                "moindre souci, vous passez par nous, on fait le lien, c'est justement notre rôle."
            ),
        ),
        (CLIENT, "{ack}"),
    ),
    ((CLIENT, "Il y a un délai de carence ?"), (AGENT, "Non, sur cette formule il n'y a pas de délai de carence.")),
    (
        (CLIENT, "Et on peut changer de formule après ?"),
        (AGENT, "Oui, à chaque échéance vous pouvez monter ou descendre de formule, sans frais."),
    ),
    (
        (CLIENT, "Vous pouvez me redire ce qui est couvert exactement ?"),
        (
            AGENT,
            (
                "Oui, alors je reprends tranquillement. Vous avez la garantie {g1}, ensuite {g2}, et puis {g3}. "
                "Chaque garantie a son plafond, tout est détaillé dans le tableau, et si un jour vous avez un doute "
                "sur une prise en charge, vous m'appelez et on regarde ensemble."
            ),
        ),
        (CLIENT, "{ack}"),
    ),
    (
        (CLIENT, "Et par rapport à {insurer}, c'est vraiment mieux ?"),
        (
            AGENT,
            (
                "Sur les garanties qui comptent pour vous, oui, vous êtes mieux couvert{e}, et pour un prix plus "
                "bas. J'ai comparé ligne par ligne avec ce que vous m'avez dit."
            ),
        ),
        (CLIENT, "Bon, si vous le dites."),
    ),
)
PRODUCT_FILLER: dict[str, tuple[Wording, ...]] = {
    "Santé": (
        (
            (CLIENT, "Et les lunettes, c'est remboursé comment ?"),
            (
                AGENT,
                (
                    "Sur cette formule, vous avez un forfait de {amount} euros tous les deux ans pour les verres et la "
                    "monture."
                ),
            ),
        ),
        (
            (CLIENT, "Et s'il y a une hospitalisation ?"),
            (
                AGENT,
                (
                    "La chambre particulière est prise en charge jusqu'à {small_amount} euros par jour, et le forfait "
                    "journalier est couvert sans limite de durée."
                ),
            ),
        ),
        (
            (CLIENT, "Le dentaire, c'est bien remboursé ?"),
            (
                AGENT,
                (
                    "Oui, les prothèses sont prises en charge à {percent} pour cent de la base de remboursement, "
                    "c'est un des points forts de la formule."
                ),
            ),
        ),
        (
            (CLIENT, "Il y a le tiers payant ?"),
            (
                AGENT,
                (
                    "Oui, vous aurez une carte de tiers payant, donc pas d'avance de frais à la pharmacie ni chez la "
                    "plupart des professionnels de santé. Et pour les consultations, le remboursement arrive en "
                    "deux ou trois jours sur votre compte en général."
                ),
            ),
            (CLIENT, "Ah, c'est pratique."),
        ),
        (
            (CLIENT, "Et la téléconsultation, c'est compris ?"),
            (
                AGENT,
                (
                    "Oui, c'est inclus, vous pouvez parler à un médecin vingt-quatre heures sur vingt-quatre, sept "
                    "jours sur sept, sans rien payer."
                ),
            ),
        ),
    ),
    "Obsèques": (
        (
            (CLIENT, "Et le capital, il est versé quand ?"),
            (
                AGENT,
                (
                    "Dans les deux jours qui suivent la réception des pièces, directement à vos bénéficiaires "
                    "ou à l'entreprise de pompes funèbres."
                ),
            ),
        ),
        ((CLIENT, "Et si je déménage ?"), (AGENT, "Ça ne change rien, le contrat vous suit partout en France.")),
        (
            (CLIENT, "Et le capital, il augmente avec le temps ?"),
            (AGENT, "Oui, il est revalorisé chaque année, pour suivre le coût de la vie."),
        ),
    ),
    "Prévoyance": (
        (
            (CLIENT, "Et si je suis en arrêt longtemps ?"),
            (AGENT, "Les indemnités journalières sont versées jusqu'à la reprise, avec un maximum de trois ans."),
        ),
        (
            (CLIENT, "Et mes enfants, ils sont protégés ?"),
            (AGENT, "Oui, la rente éducation est versée jusqu'à leurs vingt-cinq ans s'ils font des études."),
        ),
    ),
    "Auto": (
        (
            (CLIENT, "Et si on me vole la voiture ?"),
            (AGENT, "Le vol est couvert, avec une franchise de {small_amount} euros seulement."),
        ),
        (
            (CLIENT, "Et l'assistance, c'est à partir de combien de kilomètres ?"),
            (AGENT, "Zéro kilomètre, même devant chez vous, on vous dépanne."),
        ),
        (
            (CLIENT, "J'ai un véhicule de remplacement si la voiture est au garage ?"),
            (AGENT, "Oui, pendant toute la durée des réparations, dans la limite de quinze jours."),
        ),
    ),
    "Habitation": (
        (
            (CLIENT, "Et les dégâts des eaux, c'est couvert ?"),
            (AGENT, "Oui, y compris chez le voisin si ça vient de chez vous."),
        ),
        (
            (CLIENT, "Et si je dois être relogé{e} ?"),
            (AGENT, "Le relogement est pris en charge jusqu'à un an, c'est compris dans la formule."),
        ),
        ((CLIENT, "Et pour le jardin ?"), (AGENT, "Les arbres et les clôtures sont couverts en cas de tempête.")),
    ),
}

# Filling in the subscription form: no segment's trace terms, so it fits any call.
FORM_FILLER: tuple[Wording, ...] = (
    ((AGENT, "Vous pouvez me confirmer votre date de naissance ?"), (CLIENT, "Le {dob}.")),
    ((AGENT, "Et votre adresse, c'est toujours le {street_number} {street} ?"), (CLIENT, "Oui, c'est ça, à {city}.")),
    ((AGENT, "Vous avez un médecin traitant ?"), (CLIENT, "Oui, le docteur {doctor}, à {city}.")),
    ((AGENT, "Votre conjoint, il est né en quelle année ?"), (CLIENT, "En {birth_year}."), (AGENT, "Merci.")),
    ((AGENT, "Je vérifie votre numéro de téléphone, c'est bien le {phone} ?"), (CLIENT, "Oui, c'est bien ça.")),
    ((AGENT, "Vous êtes au régime général de la Sécurité sociale ?"), (CLIENT, "Oui, le régime général.")),
    ((AGENT, "Et votre nom, ça s'écrit {spelled} ?"), (CLIENT, "Oui, c'est ça.")),
    ((AGENT, "Vous préférez être prélevé{e} le 5 ou le 10 ?"), (CLIENT, "Le 10, c'est mieux pour moi.")),
    ((AGENT, "Vous avez un deuxième numéro où on peut vous joindre ?"), (CLIENT, "Non, juste le portable.")),
    ((AGENT, "Vous êtes né{e} où ?"), (CLIENT, "À {birth_city}."), (AGENT, "D'accord, je complète.")),
    ((AGENT, "Une petite seconde, je remplis les champs, ça me demande votre profession."), (CLIENT, "{work}")),
)
# Reading the guarantee table: the offer's words, only after an offer.
PRODUCT_DETAIL: tuple[Wording, ...] = (
    ((AGENT, "Pour {guarantee_item}, vous êtes couvert{e} à {percent} pour cent."), (CLIENT, "{ack}")),
    (
        (CLIENT, "Et {guarantee_item}, c'est compris ?"),
        (AGENT, "Oui, c'est inclus dans la formule {formula}, avec un plafond de {amount} euros par an."),
    ),
    (
        (
            AGENT,
            (
                "Je vous lis la ligne suivante du tableau, {guarantee_item}, prise en charge à {percent} pour cent, et "
                "ensuite {guarantee_item}, c'est inclus également."
            ),
        ),
        (CLIENT, "{yes}"),
    ),
    (
        (CLIENT, "Attendez, je note. {guarantee_item}, vous avez dit combien ?"),
        (AGENT, "{percent} pour cent, dans la limite de {amount} euros par an."),
        (CLIENT, "{ack}"),
    ),
)

FAMILY_LABELS = {
    "Santé": "complémentaire santé",
    "Obsèques": "assurance obsèques",
    "Prévoyance": "prévoyance",
    "Auto": "assurance auto",
    "Habitation": "assurance habitation",
}
FAMILY_LABELS_OF = {  # "une offre de ..." with the elision
    "Santé": "de complémentaire santé",
    "Obsèques": "d'assurance obsèques",
    "Prévoyance": "de prévoyance",
    "Auto": "d'assurance auto",
    "Habitation": "d'assurance habitation",
}
INSURERS = ("MAAF", "MACIF", "AXA", "Groupama", "MAIF", "Allianz", "Matmut", "GMF", "Generali", "la Mutuelle Générale")
YES = ("Oui.", "Oui, oui.", "D'accord.", "Oui d'accord.", "Ok.", "Mm, oui.", "Bah oui.", "Ouais.", "Oui, bien sûr.")
ACKS = ("D'accord.", "Ok, d'accord.", "Très bien.", "Oui.", "Mm.", "Ah oui, d'accord.", "Entendu.", "Bon, d'accord.")
CONSENT_YES = (
    "Oui, j'accepte de poursuivre.",
    "Oui, allez-y.",
    "Oui oui, on peut poursuivre.",
    "Oui, d'accord, j'ai un peu de temps.",
    "Bah oui, allez-y, je vous écoute.",
)
HELLOS = ("Oui, bonjour.", "Ah oui, bonjour.", "Bonjour.", "Oui c'est moi, bonjour.")
PRICE_REACTIONS = (
    "Ah, d'accord, c'est correct.",
    "Ah oui, c'est moins cher que ce que je paie.",
    "Mm, c'est un peu cher quand même.",
    "D'accord, et c'est sans engagement ?",
    "Ah, ça va, c'est raisonnable.",
)
WORK = (
    "Je suis à la retraite depuis {years} ans.",
    "En activité, je suis aide-soignante.",
    "Je travaille dans la logistique.",
    "Retraité{e}, oui.",
    "Je suis commerçant{e}.",
)
CHILDREN = (
    "Non, ils sont grands maintenant.",
    "Oui, deux, de {child_age} et {child_age2} ans.",
    "Un seul, il a {child_age} ans.",
    "Non, pas d'enfants.",
)
WHEN = (
    "demain en fin de matinée",
    "ce soir vers dix-huit heures",
    "jeudi après-midi",
    "la semaine prochaine",
    "demain vers 18 heures",
    "lundi matin",
)
CLIENT_FILLERS = ("euh", "bah", "ben", "bah euh", "hum", "alors")
AGENT_FILLERS = ("euh", "alors", "donc euh", "bon")


# --- The call ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cast:
    """Who and what a call is about: from the CRM simulator's sale when the call id is one of its recordings."""

    call_id: str
    duration: float
    direction: str
    agent_name: str
    company: Company
    civ: str  # "madame" / "monsieur"
    nom: str
    city: str
    product: str
    formula: str
    premium: float
    date_effet: date
    fiche_id: str | None
    from_crm: bool


@dataclass
class _Utterance:
    speaker: str  # AGENT / CLIENT
    text: str
    segment: str | None = None  # the scripted segment it belongs to (None: filler)


@dataclass(frozen=True)
class _Call:
    cast: _Cast
    kind: str
    agent_speaker_id: str
    client_first: bool
    variants: dict[str, str]
    words: tuple[tuple[str, float, float, str, str, float | None], ...]  # text, start, end, type, speaker, logprob
    segment_spans: dict[str, tuple[float, float]] = field(default_factory=dict)


def parse_call_id(call_id: str) -> tuple[str, int] | None:
    """``(fiche_id, n)`` of a CRM-simulator call id ``c-<fiche_id>-<n>``; None for any other id."""
    match = CALL_ID_RE.fullmatch(call_id)
    if match is None:
        return None
    return match["fiche_id"], int(match["n"])


def call_id_from_recording(reference: str) -> str:
    """The call id a recording URL or uploaded file name refers to: its last path segment without extension."""
    path = urlsplit(reference).path if "://" in reference else reference
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem or reference


@lru_cache(maxsize=1024)
def _crm_recording(call_id: str, crm_seed: int) -> tuple[dict[str, Any], dict[str, Any], int] | None:
    """``(sale item, recording, chosen formula index)`` of the CRM simulator for ``call_id`` (revision 0 first,
    then later revisions, which may add recordings); None when the id is not one of its recordings.
    Cached: callers must not change the dicts."""
    parsed = parse_call_id(call_id)
    if parsed is None:
        return None
    fiche_id, _n = parsed
    located = crm_data.parse_fiche_id(fiche_id)
    if located is None:
        return None
    day, index = located
    for revision in range(CRM_REVISIONS_SEARCHED):
        # The sale alone (not its day's other sales, nor its details): the CRM simulator's own generator.
        sale = crm_data._sale(day, index, seed=crm_seed, revision=revision)
        for recording in sale.item["recordings"]:
            if recording["call_id"] == call_id:
                return sale.item, recording, sale.formula
    return None


def _cast(call_id: str, crm_seed: int) -> _Cast:
    found = _crm_recording(call_id, crm_seed)
    if found is not None:
        item, recording, formula = found
        produit = item["produit"]
        prospect = item["prospect"]
        return _Cast(
            call_id=call_id,
            duration=float(recording["duration_seconds"]),
            direction=recording["direction"],
            agent_name=item["agent_name"],
            company=GROUP_COMPANIES.get(item["groupe"], COMPANIES[0]),
            civ="madame" if prospect["civilite"] == "Mme" else "monsieur",
            nom=prospect["nom"],
            city=prospect["ville"],
            product=produit,
            formula=crm_data.PRODUCTS[produit][2][formula],
            premium=float(item["montant_cotisation"]),
            date_effet=_first_of_next_month(date.fromisoformat(item["sales_date"])),
            fiche_id=item["fiche_id"],
            from_crm=True,
        )
    rng = _rng("cast", call_id)
    produit = rng.choices(list(crm_data.PRODUCTS), weights=[p[0] for p in crm_data.PRODUCTS.values()])[0]
    premium = round(rng.uniform(*crm_data.PRODUCTS[produit][1]), 2)
    female = rng.random() < 0.52
    agent = rng.choice(AGENTS)
    return _Cast(
        call_id=call_id,
        duration=float(rng.randint(25, 240) if rng.random() < 0.4 else rng.randint(240, 1800)),
        direction="outbound" if rng.random() < 0.7 else "inbound",
        agent_name=agent.name,
        company=GROUP_COMPANIES.get(agent.groupe, COMPANIES[0]),
        civ="madame" if female else "monsieur",
        nom=rng.choice(crm_data.NOMS),
        city=rng.choice(crm_data.CITIES)[0],
        product=produit,
        formula=crm_data.PRODUCTS[produit][2][1],
        premium=premium,
        date_effet=date(2026, rng.randint(1, 12), 1),
        fiche_id=None,
        from_crm=False,
    )


# Personal data said aloud (``pii``): what the redaction must catch (tests of the redactor, of the redaction at
# ingestion and of what reaches the LLM). The client gives an e-mail (spelled out), a phone number (pairs in
# words), a NIR, an IBAN, then a Luhn-valid card number (in one of three spoken forms) and its security code.
PERSONAL_DATA_EXCHANGE: Wording = (
    (AGENT, "Pour le dossier, quelle est votre adresse e-mail ?"),
    (CLIENT, "C'est {pii_email_spoken}."),
    (AGENT, "Et un numéro où vous joindre ?"),
    (CLIENT, "Le {pii_phone_spoken}."),
    (AGENT, "Votre numéro de sécurité sociale, s'il vous plaît ?"),
    (CLIENT, "{pii_nir_spoken}."),
    (AGENT, "Pour le prélèvement, il me faut votre IBAN."),
    (CLIENT, "Alors, {pii_iban_spoken}."),
    (AGENT, "Et pour la première cotisation, votre numéro de carte bancaire ?"),
    (CLIENT, "Oui, attendez... alors c'est {pii_card_spoken}."),
    (AGENT, "Et le cryptogramme, les trois chiffres au dos ?"),
    (CLIENT, "{pii_card_cvv}."),
)


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def personal_data(call_id: str, seed: int = DEFAULT_SEED) -> dict[str, str]:
    """What the client of ``call_id`` says with ``pii``: ``card_number`` (16 digits, Visa, Luhn-valid),
    ``card_cvv``, ``phone`` (10 digits), ``email``, ``nir`` (15 digits, key checked), ``iban`` (French, compact),
    and how each is said (``*_spoken``)."""
    rng = _rng(seed, call_id, "personal-data")
    body = "497" + "".join(str(rng.randint(0, 9)) for _ in range(12))
    card = body + _luhn_digit(body)
    phone = "0" + rng.choice("67") + "".join(f"{rng.randint(0, 99):02d}" for _ in range(4))
    nir_body = f"{rng.choice('12')}{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 95):02d}"
    nir_body += f"{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
    nir = nir_body + f"{97 - int(nir_body) % 97:02d}"
    bban = "".join(str(rng.randint(0, 9)) for _ in range(23))
    check = 98 - int(bban + "152700") % 97  # F=15, R=27, check digits 00
    iban = f"FR{check:02d}{bban}"
    name = normalize(rng.choice(crm_data.NOMS)).replace(" ", "")
    number = rng.randint(10, 99)
    say = _rng(seed, call_id, "personal-data-spoken")
    groups = [card[i : i + 4] for i in range(0, 16, 4)]
    card_forms = (
        " ".join(groups),
        ", ".join(french_number(int(g)) if g[0] != "0" else " ".join(_UNITS[int(c)] for c in g) for g in groups),
        ", ".join(" ".join(_UNITS[int(c)] for c in g) for g in groups),
    )
    pairs = [phone[i : i + 2] for i in range(0, 10, 2)]
    return {
        "card_number": card,
        "card_cvv": f"{rng.randint(0, 999):03d}",
        "phone": phone,
        "email": f"{name}.{number}@exemple.fr",
        "nir": nir,
        "iban": iban,
        "card_spoken": say.choice(card_forms),
        "phone_spoken": ", ".join(
            (f"zéro {_UNITS[int(p[1])]}" if p[0] == "0" else french_number(int(p))) for p in pairs
        ),
        "email_spoken": f"{name} point {number} arobase exemple point fr",
        "nir_spoken": " ".join((nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:])),
        "iban_spoken": " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)),
    }


def _first_of_next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


class _Writer:
    """Renders wordings into utterances for one call: slots, ASR-like styling."""

    def __init__(self, cast: _Cast, rng: random.Random, variants: Mapping[str, str]) -> None:
        self.rng = rng
        family = cast.product.split()[0]
        self.family = family
        female = cast.civ == "madame"
        guarantees = [g.lower() for g in rng.sample(crm_data.GARANTIES[family], 3)]
        price = _say_price(cast.premium, rng)
        insurer = rng.choice(INSURERS)
        first, *_rest = cast.agent_name.split(" ")
        static: dict[str, str] = {
            "civ": cast.civ,
            "Civ": cast.civ.capitalize(),
            "nom": cast.nom,
            "agent": cast.agent_name,
            "first": first,
            "company": cast.company.name,
            "orias": cast.company.orias if rng.random() < 0.8 else cast.company.orias.replace(" ", ""),
            "product": cast.product,
            "formula": cast.formula,
            "price": price,
            "family": FAMILY_LABELS[family],
            "of_family": FAMILY_LABELS_OF[family],
            "when": rng.choice(WHEN),
            "date_effet": _say_date(cast.date_effet, rng),
            "insurer": insurer,
            "city": cast.city,
            "g1": guarantees[0],
            "g2": guarantees[1],
            "g3": guarantees[2],
            "e": "e" if female else "",
            "quatorze": "quatorze" if rng.random() < 0.8 else "14",
            "deux_ans": "deux ans" if rng.random() < 0.85 else "2 ans",
            "price_part": f", à {price} par mois" if variants.get(OFFER) == OK else "",
            "agent_city": rng.choice(("Lyon", "Paris", "Marseille", "Lille")),
            "spelled": " ".join(ch.upper() for ch in cast.nom if ch.isalpha()),
        }
        self.static = static
        self.dynamic: dict[str, Callable[[], str]] = {
            "yes": lambda: rng.choice(YES),
            "ack": lambda: rng.choice(ACKS),
            "hello": lambda: rng.choice(HELLOS),
            "consent_yes": lambda: rng.choice(CONSENT_YES),
            "price_reaction": lambda: rng.choice(PRICE_REACTIONS),
            "years": lambda: _say_number(rng.randint(2, 25), rng),
            "age": lambda: _say_number(rng.randint(28, 82), rng),
            "work": lambda: self.fill(rng.choice(WORK)),
            "children": lambda: self.fill(rng.choice(CHILDREN)),
            "child_age": lambda: _say_number(rng.randint(3, 12), rng),
            "child_age2": lambda: _say_number(rng.randint(13, 19), rng),
            "budget": lambda: _say_number(rng.randrange(40, 200, 10), rng),
            "budget_big": lambda: _say_number(rng.randrange(3000, 9000, 500), rng),
            "amount": lambda: _say_number(rng.randrange(100, 500, 50), rng),
            "small_amount": lambda: _say_number(rng.randrange(40, 160, 10), rng),
            "percent": lambda: _say_number(rng.choice((125, 150, 200, 250, 300)), rng),
            "month": lambda: rng.choice(_MONTHS),
            "year": lambda: str(rng.randint(2009, 2022)),
            "km": lambda: _say_number(rng.randrange(5000, 30000, 1000), rng),
            "rooms": lambda: _say_number(rng.randint(2, 7), rng),
            "sms_code": lambda: " ".join(str(rng.randint(0, 9)) for _ in range(6)),
            "dob": lambda: (
                f"{_say_number(rng.randint(1, 28), rng, words_share=0.3)} {rng.choice(_MONTHS)} "
                f"{_say_number(rng.randint(1942, 2000), rng, words_share=0.2)}"
            ),
            "street_number": lambda: str(rng.randint(1, 180)),
            "street": lambda: rng.choice(crm_data.STREETS),
            "doctor": lambda: rng.choice(crm_data.NOMS),
            "birth_year": lambda: _say_number(rng.randint(1940, 2000), rng, words_share=0.3),
            "phone": lambda: "0" + rng.choice("67") + "".join(f" {rng.randint(0, 99):02d}" for _ in range(4)),
            "birth_city": lambda: rng.choice(crm_data.CITIES)[0],
            "guarantee_item": lambda: rng.choice(crm_data.GARANTIES[family]).lower(),
        }

    def fill(self, template: str) -> str:
        def slot(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in self.dynamic:
                return self.dynamic[name]()
            return self.static[name]

        return re.sub(r"\{(\w+)\}", slot, template)

    def utterances(self, wording: Wording, segment: str | None) -> list[_Utterance]:
        return [_Utterance(speaker, self.asr(speaker, self.fill(template)), segment) for speaker, template in wording]

    def asr(self, speaker: str, text: str) -> str:
        """ASR-like styling: fillers, lowercase starts, dropped punctuation, French spaces before ?!:; removed."""
        rng = self.rng
        text = re.sub(r"\s+([?!:;])", r"\1", text)
        if rng.random() < (0.18 if speaker == CLIENT else 0.07):
            filler = rng.choice(CLIENT_FILLERS if speaker == CLIENT else AGENT_FILLERS)
            text = f"{filler.capitalize()}, {text[0].lower()}{text[1:]}"
        if rng.random() < 0.12:
            text = text.replace(",", "")
        if rng.random() < 0.25 and text[-1] in ".?!":
            text = text[:-1]
        if rng.random() < 0.3:
            text = text[0].lower() + text[1:]
        return text


def _plan(cast: _Cast, seed: int) -> tuple[str, dict[str, str], random.Random]:
    """The call's kind and each segment's variant."""
    rng = _rng(seed, cast.call_id, "plan")
    if cast.duration < FULL_CALL_MIN_SECONDS:
        roll = rng.random()
        if cast.direction == "outbound" and (cast.duration < 60 and roll < 0.5):
            kind = KIND_VOICEMAIL
        elif roll < 0.75:
            kind = KIND_CALLBACK
        else:
            kind = KIND_REFUSAL
        present = {
            KIND_VOICEMAIL: (IDENTITY,),
            KIND_CALLBACK: (IDENTITY, COMMERCIAL_PURPOSE),
            KIND_REFUSAL: (IDENTITY, COMMERCIAL_PURPOSE, CONSENT),
        }[kind]
        return kind, {key: OK if key in present else MISSING for key in SEGMENT_KEYS}, rng
    variants = dict.fromkeys(SEGMENT_KEYS, OK)
    roll = rng.random()
    if roll >= SHARE_COMPLIANT:
        problems = 2 if rng.random() < SHARE_TWO_PROBLEMS else 1
        first_kind = MISSING if roll < SHARE_COMPLIANT + SHARE_MISSING else CONTRADICTED
        for number in range(problems):
            kind = first_kind if number == 0 else rng.choice((MISSING, CONTRADICTED))
            pool = [key for key in (SEGMENT_KEYS if kind == MISSING else CONTRADICTABLE) if variants[key] == OK]
            variants[rng.choice(pool)] = kind
    return KIND_FULL, variants, rng


def _segment_wording(key: str, variant: str, cast: _Cast, rng: random.Random) -> Wording | None:
    if key == IDENTITY:
        library = IDENTITY_OUTBOUND if cast.direction == "outbound" else IDENTITY_INBOUND
        return rng.choice(library[variant])
    options = SEGMENTS[key].get(variant)
    if not options:
        return None  # a missing segment with no replacement line: simply absent
    return rng.choice(options)


def _personal_data(writer: _Writer, cast: _Cast, seed: int) -> list[_Utterance]:
    """The exchange of a call whose client gives personal data (``personal_data``; no draw from the call's own
    generator: the rest of the call is the same as without it)."""
    writer.static.update({f"pii_{key}": value for key, value in personal_data(cast.call_id, seed).items()})
    return [_Utterance(speaker, writer.fill(template), None) for speaker, template in PERSONAL_DATA_EXCHANGE]


def _script(cast: _Cast, seed: int, pii: bool = False) -> tuple[str, dict[str, str], bool, list[_Utterance]]:
    """``(kind, variants, client_first, utterances)``: the scripted call, with its filler (and the payment
    personal data exchange after the offer, or before the end of a short call, when ``pii``)."""
    kind, variants, rng = _plan(cast, seed)
    writer = _Writer(cast, rng, variants)
    budget = round(WORDS_PER_SECOND * cast.duration)
    client_first = cast.direction == "outbound" and kind != KIND_VOICEMAIL and rng.random() < 0.6
    opening: list[_Utterance] = [_Utterance(CLIENT, rng.choice(PICKUPS))] if client_first else []

    if kind != KIND_FULL:
        if kind == KIND_VOICEMAIL:
            body = writer.utterances(rng.choice(VOICEMAIL_LINES), IDENTITY)
            return kind, variants, False, body
        body = writer.utterances(_segment_wording(IDENTITY, OK, cast, rng) or (), IDENTITY)
        body += writer.utterances(_segment_wording(COMMERCIAL_PURPOSE, OK, cast, rng) or (), COMMERCIAL_PURPOSE)
        if kind == KIND_REFUSAL:
            ending = writer.utterances(((AGENT, "Est-ce que vous acceptez de poursuivre cet appel ?"),), CONSENT)
            ending += writer.utterances(rng.choice(REFUSAL_LINES), CONSENT)
        else:
            ending = writer.utterances(rng.choice(CALLBACK_LINES), None)
        words_so_far = _count_words(opening + body + ending)
        filler = _filler(writer, [SMALL_TALK], budget - words_so_far, rng)
        said = _personal_data(writer, cast, seed) if pii else []
        return kind, variants, client_first, opening + body + filler + said + ending

    order = [IDENTITY, COMMERCIAL_PURPOSE, CONSENT, RECORDING_NOTICE, NEEDS_ANALYSIS, OFFER]
    if rng.random() < 0.3:  # the recording notice right after the introduction
        order = [IDENTITY, RECORDING_NOTICE, COMMERCIAL_PURPOSE, CONSENT, NEEDS_ANALYSIS, OFFER]
    legal = [WITHDRAWAL, DOCUMENTS_BEFORE_SIGNATURE, NO_PHONE_SIGNATURE]
    rng.shuffle(legal)
    order += [*legal, CLOSING]
    segments: dict[str, list[_Utterance]] = {}
    for key in order:
        wording = _segment_wording(key, variants[key], cast, rng)
        segments[key] = writer.utterances(wording, key if variants[key] != MISSING else None) if wording else []

    # Filler slots: (after which segment, pools, weight). Needs filler needs the needs analysis, product
    # questions need the offer (their words are those segments' trace terms); small talk fits anywhere.
    family = writer.family
    needs_pools: list[Sequence[Wording]] = [FORM_FILLER, SMALL_TALK]
    if variants[NEEDS_ANALYSIS] == OK:
        needs_pools += [NEEDS_FILLER_COMMON, NEEDS_FILLER.get(family, ())]
    product_pools: list[Sequence[Wording]] = [FORM_FILLER, SMALL_TALK]
    if variants[OFFER] == OK:
        product_pools = [PRODUCT_FILLER_COMMON, PRODUCT_FILLER.get(family, ()), PRODUCT_DETAIL, PRODUCT_DETAIL]
    slots: list[tuple[str, Sequence[Sequence[Wording]], float]] = [
        (CONSENT, [SMALL_TALK], 0.1),
        (NEEDS_ANALYSIS, needs_pools, 0.45),
        (OFFER, product_pools, 0.35),
        (legal[-1], [SMALL_TALK, FORM_FILLER], 0.1),
    ]
    scripted = opening + [u for key in order for u in segments[key]]
    remaining = max(0, budget - _count_words(scripted))
    fillers = {after: _filler(writer, pools, round(remaining * weight), rng) for after, pools, weight in slots}
    utterances = list(opening)
    for key in order:
        utterances += segments[key]
        if key == OFFER and pii:
            utterances += _personal_data(writer, cast, seed)
        utterances += fillers.get(key, [])
    return kind, variants, client_first, utterances


def _count_words(utterances: Sequence[_Utterance]) -> int:
    return sum(len(u.text.split()) for u in utterances)


def _filler(writer: _Writer, pools: Sequence[Sequence[Wording]], words: int, rng: random.Random) -> list[_Utterance]:
    """Filler exchanges drawn from ``pools`` (a shuffled deck, reshuffled when used up) until ``words`` words."""
    deck_source = [wording for pool in pools for wording in pool]
    result: list[_Utterance] = []
    count = 0
    deck: list[Wording] = []
    while count < words and deck_source:
        if not deck:
            deck = list(deck_source)
            rng.shuffle(deck)
        exchange = writer.utterances(deck.pop(), None)
        size = _count_words(exchange)
        if count + size / 2 > words:  # closer to the target without it
            break
        result += exchange
        count += size
    return result


def _timestamps(
    utterances: Sequence[_Utterance], duration: float, agent_id: str, client_id: str, rng: random.Random
) -> tuple[tuple[tuple[str, float, float, str, str, float | None], ...], dict[str, tuple[float, float]]]:
    """Word and spacing items spanning ``[lead, duration - tail]``, and each scripted segment's time span."""
    tokens: list[tuple[str, str, str | None, float, float]] = []  # text, speaker, segment, start, end (natural)
    t = 0.0
    previous: str | None = None
    for utterance in utterances:
        if previous is not None:
            t += rng.uniform(0.3, 0.9) if utterance.speaker != previous else rng.uniform(0.15, 0.45)
        for i, text in enumerate(utterance.text.split()):
            if i:
                t += rng.uniform(0.02, 0.08)
            length = 0.09 + 0.055 * len(text) * rng.uniform(0.8, 1.2)
            tokens.append((text, utterance.speaker, utterance.segment, t, t + length))
            t += length
        previous = utterance.speaker
    if not tokens:
        return (), {}
    lead = min(rng.uniform(0.2, 0.9), duration * 0.05)
    tail = min(rng.uniform(0.3, 1.5), duration * 0.05)
    scale = max(duration - lead - tail, 0.1) / t

    def at(value: float) -> float:
        return round(lead + value * scale, 3)

    items: list[tuple[str, float, float, str, str, float | None]] = []
    spans: dict[str, tuple[float, float]] = {}
    for index, (text, speaker, segment, start, end) in enumerate(tokens):
        speaker_id = agent_id if speaker == AGENT else client_id
        word_start, word_end = at(start), at(end)
        items.append((text, word_start, word_end, "word", speaker_id, round(-(rng.uniform(0.0, 0.6) ** 2), 3)))
        if segment is not None:
            first, _last = spans.get(segment, (word_start, word_end))
            spans[segment] = (first, word_end)
        if index + 1 < len(tokens):
            items.append((" ", word_end, at(tokens[index + 1][3]), "spacing", speaker_id, None))
    return tuple(items), spans


@lru_cache(maxsize=32)
def _build(call_id: str, seed: int, crm_seed: int, pii: bool = False) -> _Call:
    cast = _cast(call_id, crm_seed)
    kind, variants, client_first, utterances = _script(cast, seed, pii)
    rng = _rng(seed, call_id, "speakers")
    agent_id = "speaker_0" if rng.random() < 0.5 else "speaker_1"
    client_id = "speaker_1" if agent_id == "speaker_0" else "speaker_0"
    words, spans = _timestamps(utterances, cast.duration, agent_id, client_id, _rng(seed, call_id, "timing"))
    return _Call(
        cast=cast,
        kind=kind,
        agent_speaker_id=agent_id,
        client_first=client_first,
        variants=variants,
        words=words,
        segment_spans=spans,
    )


# --- Public API --------------------------------------------------------------------------------------


def transcript_for(
    call_id: str, *, seed: int = DEFAULT_SEED, crm_seed: int = DEFAULT_CRM_SEED, pii: bool = False
) -> dict[str, Any]:
    """The vendor's 200 body for the recording ``call_id`` (a fresh dict: callers may change it); ``pii``:
    the client gives personal data (``personal_data``: e-mail, phone, NIR, IBAN, card number) after the offer."""
    call = _build(call_id, seed, crm_seed, pii)
    words: list[dict[str, Any]] = [
        {"text": text, "start": start, "end": end, "type": kind, "speaker_id": speaker}
        | ({"logprob": logprob} if logprob is not None else {})
        for text, start, end, kind, speaker, logprob in call.words
    ]
    digest = hashlib.sha256(f"{seed}|{call_id}".encode()).hexdigest()
    return {
        "language_code": "fr",
        "language_probability": round(0.93 + int(digest[12:16], 16) / 0xFFFF * 0.06, 3),
        "text": "".join(word["text"] for word in words),
        "words": words,
        "transcription_id": f"tr_{digest[:12]}",
        "audio_duration_secs": call.cast.duration,
    }


def truth_for(
    call_id: str, *, seed: int = DEFAULT_SEED, crm_seed: int = DEFAULT_CRM_SEED, pii: bool = False
) -> dict[str, Any]:
    """What the call holds: ``{"call_id", "duration", "agent_speaker_id", "segments": [{"key", "variant", "start",
    "end"}] (every key of SEGMENT_KEYS in that order; start/end None when missing), "company", "agent_name",
    "orias"}`` plus ``kind``, ``direction``, ``client_first``, ``fiche_id``, ``from_crm``, ``product``,
    ``formula``, ``premium``, ``words`` (count of word items) and ``words_per_second``; with ``pii``,
    ``personal_data`` (what the client says: ``personal_data``)."""
    call = _build(call_id, seed, crm_seed, pii)
    cast = call.cast
    segments = []
    for key in SEGMENT_KEYS:
        variant = call.variants[key]
        span = call.segment_spans.get(key) if variant != MISSING else None
        segments.append(
            {"key": key, "variant": variant, "start": span[0] if span else None, "end": span[1] if span else None}
        )
    word_count = sum(1 for item in call.words if item[3] == "word")
    return {
        "call_id": call_id,
        "duration": cast.duration,
        "agent_speaker_id": call.agent_speaker_id,
        "segments": segments,
        "company": cast.company.name,
        "agent_name": cast.agent_name,
        "orias": cast.company.orias,
        "kind": call.kind,
        "direction": cast.direction,
        "client_first": call.client_first,
        "fiche_id": cast.fiche_id,
        "from_crm": cast.from_crm,
        "product": cast.product,
        "formula": cast.formula,
        "premium": cast.premium,
        "words": word_count,
        "words_per_second": round(word_count / cast.duration, 3) if cast.duration else 0.0,
    } | ({"personal_data": personal_data(call_id, seed)} if pii else {})


def recording_duration(call_id: str, *, crm_seed: int = DEFAULT_CRM_SEED) -> float:
    """The audio duration of ``call_id`` in seconds (the CRM's ``duration_seconds`` for its recordings)."""
    return _cast(call_id, crm_seed).duration
