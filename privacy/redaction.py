"""The redactor of French call transcripts. Pure functions: no ORM, no I/O; of the project only ``core.french``.

What it finds (``Kind``), each replaced by a typed placeholder (``PLACEHOLDERS``): card numbers (Luhn-checked;
their expiry date and security code too), IBANs (ISO 7064 mod 97 checksum), NIRs (social security numbers, key
checked), phone numbers (``phonenumbers``: valid French or international numbers), e-mail addresses, SMS / OTP
codes, dates of birth and postal addresses when they are announced.

**Spoken forms.** A speech-to-text engine writes numbers as digits or as words, in any grouping: "4970 1012 ...",
"quatre neuf sept zéro ...", "quatre mille neuf cent soixante-dix, mille douze, ..." (groups of four), "zéro six
douze trente-quatre ..." (pairs), with fillers ("euh") and commas between the groups. The redactor reads one
speaker's words at a time (an interruption by the other speaker does not cut a number in two), turns each run
of number words and digit tokens into digit *groups* (number words composed by ``text2num``, the way a listener
hears them: "quatre-vingt-dix-sept" is 97, "zéro six" is 06), and tries the windows of consecutive groups
against each recognizer: a checksum (card, IBAN, NIR), a numbering plan (phone), or the context said just
before, by either speaker (a code after "code" / "SMS", a date after "né le" / "date de naissance", an expiry
after "expiration", three digits after "cryptogramme"). Context also widens recall where a checksum would miss
a misread digit: 12 or more digits after "carte" are a card even when Luhn fails; 13 or 15 after "sécurité
sociale" a NIR. Card numbers and codes must be caught every time (they are never stored, ``STORAGE_KINDS``).

**False friends** are left alone because nothing makes them match: a price is short and is followed by "euros",
an ORIAS number has 8 digits (no checksum, no phone plan; a code needs a code context, and "ORIAS" just before
rules it out), a contract date has no birth context, a postal code after "code postal" is not an OTP code.

**Why not Presidio.** Microsoft Presidio (``presidio-analyzer``) was judged against our needs: its recognizers
are regular expressions over *written* forms ("4970-1012-...", "+33 6 ..."), its credit card, IBAN and phone
recognizers would find none of the spoken forms above, it has no NIR or OTP recognizer for French, and its
analyzer needs a spaCy pipeline (a French model of tens of megabytes loaded in every worker) for the name and
location entities we do not redact (the agent's name, the company and the ORIAS number are evidence for the
"Identity" control point; names of people are not a kind here). What Presidio would bring for our kinds is the
checksums, which we take from maintained libraries instead: ``python-stdnum`` (Luhn, IBAN, NIR) and
``phonenumbers`` (Google's libphonenumber: which digit strings are real numbers), with ``text2num`` for French
number words. Our own code is only the French spoken-form layer.

Public API: ``scan_text`` / ``redact_text`` on plain text (whitespace-separated tokens), ``redact_words`` on a
speech-to-text word list (``{text, start, end, type: word|spacing, speaker_id, logprob}``): the covered words of
one speaker become one placeholder word per contiguous run (the first word's start, the last one's end), so a
citation of the redacted text keeps its times.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir
from text_to_num import alpha2digit

from core.french import NUMBER_WORDS


class Kind(StrEnum):
    CARD = "card"
    IBAN = "iban"
    NIR = "nir"
    PHONE = "phone"
    EMAIL = "email"
    CODE = "code"
    DOB = "dob"
    ADDRESS = "address"


PLACEHOLDERS: dict[Kind, str] = {
    Kind.CARD: "[CARTE]",
    Kind.IBAN: "[IBAN]",
    Kind.NIR: "[NIR]",
    Kind.PHONE: "[TÉLÉPHONE]",
    Kind.EMAIL: "[EMAIL]",
    Kind.CODE: "[CODE]",
    Kind.DOB: "[DATE_NAISSANCE]",
    Kind.ADDRESS: "[ADRESSE]",
}
ALL_KINDS: frozenset[Kind] = frozenset(Kind)
# Never stored in clear: redacted from the speech-to-text response before it is stored.
STORAGE_KINDS: frozenset[Kind] = frozenset({Kind.CARD, Kind.CODE})
# When two findings claim a word, the first kind here keeps it (an IBAN's digits hold Luhn-valid windows).
PRIORITY: tuple[Kind, ...] = (
    Kind.IBAN,
    Kind.CARD,
    Kind.NIR,
    Kind.PHONE,
    Kind.CODE,
    Kind.EMAIL,
    Kind.DOB,
    Kind.ADDRESS,
)
# A number read by one speaker goes on across the other's interjection ("oui", "d'accord", "je note") up to this
# many words; a longer turn of the other speaker ends it.
MAX_INTERRUPTION_WORDS = 3
PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(re.escape(p[1:-1]) for p in PLACEHOLDERS.values()) + r")\]")


@dataclass(frozen=True)
class TextFinding:
    """A span of a text to redact: ``text[start:end]`` is personal data of ``kind``."""

    kind: Kind
    start: int
    end: int


# --- Units: the words (or tokens) read, with what the recognizers need to know of each -------------------------

_EDGE_PUNCTUATION = ".,;:!?…«»\"“”()[]{}'’"
_TRAILING_PUNCTUATION = re.compile(r"[.,;:!?…»\"”)]+$")
_DIGITS = re.compile(r"^\+?\d+(?:[.\-]\d+)*$")
_SLASH_DATE = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})(?:[/.\-](\d{2}|\d{4}))?$")
_ALNUM = re.compile(r"^[A-Za-z0-9]+$")
_EMAIL_WRITTEN = re.compile(r"^[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+$")
_NUMBER_WORDS = NUMBER_WORDS | {"et"}  # "et" only inside a number ("vingt et un")
_FILLERS = frozenset(
    {"euh", "heu", "hum", "hmm", "hm", "bah", "ben", "alors", "donc", "puis", "ensuite", "tiret", "cle"}
)
_CORRECTIONS = frozenset({"pardon", "plutot", "corrige", "erreur", "trompe"})
_KEY_LEAD = frozenset({"et", "la", "sa", "avec"})
# A unit ending with one of these ends the number being said ("soixante-seize, mille cent trente": 76 then 1130).
_GROUP_END = (",", ".", ";", ":", "?", "!", "…")
_CURRENCY = frozenset({"euro", "euros", "eur", "€", "centimes", "centime", "dollars", "pourcent", "pour", "%"})
_MONTHS = {
    "janvier": 1,
    "fevrier": 2,
    "mars": 3,
    "avril": 4,
    "mai": 5,
    "juin": 6,
    "juillet": 7,
    "aout": 8,
    "septembre": 9,
    "octobre": 10,
    "novembre": 11,
    "decembre": 12,
}


def _fold(text: str) -> str:
    """Lowercase, accents removed, every run of non-alphanumeric characters one space (``l'ORIAS`` → ``l orias``)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^0-9a-z@]+", " ", stripped).split())


@dataclass
class _Unit:
    """One word (or text token): ``key`` is its index in the input, ``speaker`` its speaker (None in text)."""

    key: int
    text: str
    speaker: Any
    clean: str = ""  # lowercase, surrounding punctuation removed, accents kept
    parts: tuple[str, ...] = ()  # folded parts, for keywords
    digits: str | None = None  # a digit token's digits
    plus: bool = False  # a digit token written "+33..."
    number_word: bool = False
    placeholder: bool = False

    def __post_init__(self) -> None:
        self.placeholder = bool(PLACEHOLDER_RE.fullmatch(self.text.strip(_EDGE_PUNCTUATION.replace("[]", ""))))
        self.clean = self.text.casefold().strip(_EDGE_PUNCTUATION)
        self.parts = () if self.placeholder else tuple(_fold(self.text).split())
        bare = self.text.strip(_EDGE_PUNCTUATION)
        if _DIGITS.match(bare):
            self.digits = re.sub(r"\D", "", bare)
            self.plus = bare.startswith("+")
        elif self.parts and all(part in _NUMBER_WORDS for part in self.parts) and self.parts != ("et",):
            self.number_word = True
        elif self.parts == ("et",):
            self.number_word = True  # only inside a number ("vingt et un"); alone it ends a run

    @property
    def word(self) -> str:
        return self.parts[0] if len(self.parts) == 1 else " ".join(self.parts)

    def ends_sentence(self) -> bool:
        return self.text.rstrip().endswith(("?", "!"))


@dataclass
class _Group:
    """Consecutive units of one speaker read as one number: ``digits`` as a listener hears them."""

    digits: str
    first: int  # index in the speaker's stream
    last: int


@dataclass
class _Run:
    """A run of number groups of one speaker (fillers between them allowed), and whether "+" / "plus" leads it."""

    groups: list[_Group] = field(default_factory=list)
    plus_at: int | None = None  # stream index of a "plus" word before the run


@dataclass
class _Finding:
    kind: Kind
    units: list[int]  # global unit indices


@lru_cache(maxsize=4096)
def _as_number(text: str) -> str | None:
    """The digits of French number words read as ONE number (``"quatre mille neuf cent soixante-dix"`` → 4970),
    else None (``"quatre neuf"`` is two numbers)."""
    converted = alpha2digit(text, "fr", threshold=0)
    return converted if converted.isdigit() else None


def _word_groups(texts: Sequence[str]) -> list[tuple[str | None, int, int]]:
    """Number words split into numbers, greedily: the longest prefix that reads as one number, then the rest.
    ``(digits, first, last)`` per number; ``(None, i, i)`` for a word that is no number alone ("et")."""
    groups: list[tuple[str | None, int, int]] = []
    i = 0
    while i < len(texts):
        for j in range(min(len(texts), i + 8), i, -1):
            digits = _as_number(" ".join(texts[i:j]))
            if digits is not None:
                groups.append((digits, i, j - 1))
                i = j
                break
        else:
            groups.append((None, i, i))
            i += 1
    return groups


def _number_words(stream: _Stream, s: int) -> list[str]:
    """The number words said from stream index ``s`` on, up to 8, stopping after one that ends a group."""
    texts: list[str] = []
    u = s
    while u < len(stream.positions) and stream.unit(u).number_word and len(texts) < 8:
        texts.append(stream.unit(u).clean)
        if stream.unit(u).text.rstrip().endswith(_GROUP_END):
            break
        u += 1
    return texts


def _spelled_letter(stream: _Stream, s: int) -> tuple[str, int] | None:
    """A letter spelled at stream index ``s`` ("F", or "F comme France"): the letter and the index after it."""
    if s >= len(stream.positions):
        return None
    bare = stream.unit(s).text.strip(_EDGE_PUNCTUATION)
    if len(bare) != 1 or not bare.isalpha():
        return None
    if s + 2 < len(stream.positions) and stream.unit(s + 1).word == "comme" and stream.unit(s + 2).parts:
        return bare.upper(), s + 3
    return bare.upper(), s + 1


class _Stream:
    """The units of one speaker, in order, with their number runs."""

    def __init__(self, units: list[_Unit], positions: list[int]) -> None:
        self.units = units
        self.positions = positions  # global index of each stream unit
        self.runs = self._runs()

    def unit(self, s: int) -> _Unit:
        return self.units[self.positions[s]]

    def _key_follows(self, s: int) -> bool:
        """Whether "clé" comes within the next two units ("et la clé", "la clé", "et clé")."""
        return any(self.unit(t).word == "cle" for t in range(s + 1, min(len(self.positions), s + 3)))

    def _runs(self) -> list[_Run]:
        runs: list[_Run] = []
        current = _Run()
        words: list[int] = []  # stream indices of pending number words

        def flush_words() -> None:
            nonlocal current
            texts = [self.unit(s).clean for s in words]
            for digits, first, last in _word_groups(texts):
                if digits is None:  # a lone "et": the run ends here
                    close()
                    continue
                current.groups.append(_Group(digits, words[first], words[last]))
            words.clear()

        def close() -> None:
            nonlocal current
            if current.groups:
                runs.append(current)
            current = _Run()

        for s in range(len(self.positions)):
            unit = self.unit(s)
            if s and self.positions[s] - self.positions[s - 1] > 1 + MAX_INTERRUPTION_WORDS:
                flush_words()  # the other speaker said more than an interjection: a new utterance
                close()
            if unit.word in _KEY_LEAD and (current.groups or words) and self._key_follows(s):
                flush_words()
                continue  # "2 91 02 59 350 127 et la clé 34": the key is part of the number
            if unit.number_word:
                words.append(s)
                if unit.text.rstrip().endswith(_GROUP_END):
                    flush_words()
            elif unit.digits is not None:
                flush_words()
                if unit.plus and current.groups:
                    close()
                if unit.plus and not current.groups:
                    current.plus_at = s
                current.groups.append(_Group(unit.digits, s, s))
            elif unit.word in _FILLERS and (current.groups or words):
                flush_words()
                continue
            else:
                flush_words()
                close()
                if unit.word == "plus":
                    current.plus_at = s
                continue
            if unit.ends_sentence():
                flush_words()
                close()
        flush_words()
        close()
        return runs


# --- Context: what was said just before (by either speaker) -----------------------------------------------------


class _Context:
    def __init__(self, units: list[_Unit]) -> None:
        self.units = units

    def before(self, position: int, window: int) -> list[tuple[int, str]]:
        """``(global index, folded part)`` of the ``window`` units before ``position``, nearest last."""
        out: list[tuple[int, str]] = []
        for g in range(max(0, position - window), position):
            out.extend((g, part) for part in self.units[g].parts)
        return out

    def has(self, position: int, window: int, words: frozenset[str]) -> bool:
        return any(part in words for _g, part in self.before(position, window))

    def code(self, position: int) -> bool:
        """A one-time code was mentioned ("code", "SMS", "texto"...), not a postal or security code."""
        parts = self.before(position, 30)
        for i, (_g, part) in enumerate(parts):
            if part in _CODE_WORDS:
                following = parts[i + 1][1] if i + 1 < len(parts) else ""
                after = parts[i + 2][1] if i + 2 < len(parts) else ""
                if part == "code" and (
                    following in {"postal", "promo", "secret", "civil", "pin"}
                    or (following == "de" and after == "securite")
                ):
                    continue
                return True
        return False

    def card(self, position: int) -> bool:
        """A payment card was mentioned ("carte bancaire", "CB", "Visa"...; not "carte vitale", "carte grise")."""
        parts = self.before(position, 30)
        for i, (_g, part) in enumerate(parts):
            if part in _CARD_WORDS:
                return True
            if part == "carte":
                following = parts[i + 1][1] if i + 1 < len(parts) else ""
                if following not in _NOT_PAYMENT_CARDS:
                    return True
        return False

    def cvv(self, position: int) -> bool:
        """A card's security code was asked for ("cryptogramme", "les trois chiffres au dos", "code de
        sécurité")."""
        parts = [part for _g, part in self.before(position, 10)]
        for i, part in enumerate(parts):
            if part in _CVV_WORDS:
                return True
            if part == "securite" and parts[max(0, i - 2) : i] == ["code", "de"]:
                return True
            if part in {"dos", "derriere", "verso"} and ("chiffres" in parts or self.card(position)):  # not "au dos"
                return True
        return False

    def orias(self, position: int) -> bool:
        return any(part == "orias" or part.startswith("immatricul") for _g, part in self.before(position, 8))

    def birth(self, position: int, window: int = 14) -> int | None:
        """The index of the nearest birth cue ("né", "née", "naissance") in the ``window`` units before."""
        for g in range(position - 1, max(0, position - window) - 1, -1):
            unit = self.units[g]
            if unit.placeholder and PLACEHOLDERS[Kind.DOB] in unit.text:
                return None  # that cue's date is said (and redacted) already
            if self._birth_cue(g):
                return g
        return None

    def birth_after(self, position: int, window: int = 8) -> bool:
        """A birth cue just after a date ("le 2 mai 2001, c'est sa date de naissance")."""
        return any(self._birth_cue(g) for g in range(position + 1, min(len(self.units), position + 1 + window)))

    def _birth_cue(self, g: int) -> bool:
        unit = self.units[g]
        if unit.clean in {"né", "née", "nés", "nées"}:
            return True
        if "naissance" in unit.parts:  # "date de naissance", not "en cas de naissance d'un enfant"
            before = [part for i in range(max(0, g - 2), g) for part in self.units[i].parts]
            return bool(set(before[-2:]) & {"date", "jour", "annee", "lieu"}) or "de" not in before[-1:]
        return False


_CODE_WORDS = frozenset({"code", "codes", "sms", "texto", "textos", "otp"})
_CARD_WORDS = frozenset({"cb", "visa", "mastercard", "amex", "bancaire", "bleue", "credit", "debit"})
_NOT_PAYMENT_CARDS = frozenset({"vitale", "grise", "d", "identite", "fidelite", "mutuelle", "tiers", "sim", "de"})
_CVV_WORDS = frozenset({"cryptogramme", "cvv", "cvc", "crypto"})
_EXPIRY_WORDS = frozenset({"expiration", "expire", "validite", "jusqu", "expirer"})
_NIR_WORDS = frozenset({"secu", "sociale", "nir", "insee", "vitale"})
_IBAN_WORDS = frozenset({"iban", "rib", "bancaires"})
_ADDRESS_WORDS = frozenset({"adresse", "habite", "habitez", "domicile", "demeure", "reside", "residez", "habitons"})
_STREET_STRONG = frozenset(
    {
        "rue",
        "avenue",
        "av",
        "boulevard",
        "bd",
        "bvd",
        "allee",
        "impasse",
        "chemin",
        "quai",
        "chaussee",
        "faubourg",
        "lotissement",
        "hameau",
        "ruelle",
        "sentier",
    }
)
_STREET_WEAK = frozenset(
    {"place", "cours", "route", "voie", "passage", "square", "residence", "villa", "cite", "parvis", "esplanade"}
)
_STREET_SUFFIX = frozenset({"bis", "ter", "b"})
_EMAIL_AT = frozenset({"arobase", "arrobase", "arobas", "@"})
_EMAIL_STOP = frozenset({"c", "est", "cest", "mail", "email", "e", "adresse", "le", "la", "mon", "ma", "a"})
_EMAIL_JOINERS = frozenset({"point", "tiret", "underscore", "moins", "-", "_", "."})


# --- The recognizers over digit runs ----------------------------------------------------------------------------


def _window_digits(groups: Sequence[_Group]) -> str:
    return "".join(group.digits for group in groups)


def _valid_phone(digits: str, international: bool) -> bool:
    if not international:
        # The French format: every such number is redacted, assigned ranges or not.
        return len(digits) == 10 and digits[0] == "0" and digits[1] != "0"
    candidate = "+" + (digits[2:] if digits.startswith("00") else digits)
    try:
        parsed = phonenumbers.parse(candidate, "FR")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed)


def _valid_nir(digits: str) -> bool:
    return len(digits) == 15 and digits[0] in "12378" and stdnum_nir.is_valid(digits)


def _valid_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)


def _month_year(digits: str) -> bool:
    return len(digits) in (4, 6) and 1 <= int(digits[:2]) <= 12


class _Scanner:
    def __init__(self, units: list[_Unit]) -> None:
        self.units = units
        self.context = _Context(units)
        speakers: dict[Any, list[int]] = {}
        for g, unit in enumerate(units):
            speakers.setdefault(unit.speaker, []).append(g)
        self.streams = [_Stream(units, positions) for positions in speakers.values()]
        self.findings: list[_Finding] = []
        # A birth cue introduces one date (a contract date said next is no birth date), unless it is corrected.
        self.used_cues: set[int] = set()

    def scan(self) -> list[_Finding]:
        for stream in self.streams:
            self._ibans(stream)
            for run in stream.runs:
                self._numbers(stream, run)
            self._slash_dates(stream)
            self._emails(stream)
            self._birth_dates(stream)
            self._addresses(stream)
        return self.findings

    def _add(self, kind: Kind, stream: _Stream, first: int, last: int) -> None:
        self.findings.append(_Finding(kind, [stream.positions[s] for s in range(first, last + 1)]))

    # Numbers: cards, NIR, phones, codes, card security codes and expiry dates.
    def _numbers(self, stream: _Stream, run: _Run) -> None:
        groups = run.groups
        a = 0
        while a < len(groups):
            start = stream.positions[groups[a].first]
            hit = self._number_at(stream, run, a, start)
            if hit is None:
                a += 1
                continue
            kind, b = hit
            first = groups[a].first
            if a == 0 and run.plus_at is not None and kind == Kind.PHONE:
                first = run.plus_at
            self._add(kind, stream, first, groups[b].last)
            a = b + 1

    def _number_at(self, stream: _Stream, run: _Run, a: int, start: int) -> tuple[Kind, int] | None:
        """The kind of the longest window of ``run`` starting at group ``a`` that is personal data, and its last
        group; None when no window starting there is."""
        groups = run.groups
        ctx = self.context
        windows: list[tuple[int, str]] = []  # (last group, digits), longest first
        digits = ""
        for b in range(a, len(groups)):
            digits += groups[b].digits
            if len(digits) > 34:
                break
            windows.append((b, digits))
        windows.reverse()
        card_context = ctx.card(start)
        international = (a == 0 and run.plus_at is not None) or groups[a].digits.startswith("00")
        if ctx.has(start, 25, _IBAN_WORDS):
            for b, window in windows:
                if len(window) >= 20:
                    return Kind.IBAN, b
        nir_context = ctx.has(start, 20, _NIR_WORDS)
        for b, window in windows:  # the longest window any checksum or numbering plan accepts
            if _valid_nir(window) or (nir_context and len(window) in (13, 15)):
                return Kind.NIR, b
            if _valid_card(window) or (card_context and 12 <= len(window) <= 19):
                return Kind.CARD, b
            if _valid_phone(window, international):
                return Kind.PHONE, b
        if ctx.cvv(start):
            for b, window in windows:
                if 3 <= len(window) <= 4 and not self._priced(stream, groups[b].last):
                    return Kind.CARD, b
        if ctx.has(start, 12, _EXPIRY_WORDS):  # a month and year after "expiration": the card's
            for b, window in windows:
                if _month_year(window):
                    return Kind.CARD, b
        if not ctx.orias(start) and ctx.code(start) and ctx.birth(start) is None:
            for b, window in windows:
                if 4 <= len(window) <= 8 and not self._priced(stream, groups[b].last):
                    return Kind.CODE, b
        return None

    def _priced(self, stream: _Stream, last: int) -> bool:
        """Whether the number ending at stream index ``last`` is an amount ("49 euros", "20 %")."""
        return last + 1 < len(stream.positions) and stream.unit(last + 1).word in _CURRENCY

    def _slash_dates(self, stream: _Stream) -> None:
        """A written date ("12/03/1985", "04/28") after a birth or card expiry context."""
        for s in range(len(stream.positions)):
            unit = stream.unit(s)
            match = _SLASH_DATE.match(unit.text.strip(_EDGE_PUNCTUATION))
            if not match:
                continue
            g = stream.positions[s]
            month_year = match.group(3) is None and 1 <= int(match.group(1)) <= 12
            if month_year and self.context.has(g, 12, _EXPIRY_WORDS):  # a card's expiry: "12/26"
                self._add(Kind.CARD, stream, s, s)
            elif (cue := self.context.birth(g)) is not None and cue not in self.used_cues:
                self._add(Kind.DOB, stream, s, s)
                self._consume(cue, g)

    # IBAN: two letters and check digits, then the BBAN in any grouping.
    def _ibans(self, stream: _Stream) -> None:
        s = 0
        n = len(stream.positions)
        while s < n:
            chars, pieces = self._iban_prefix(stream, s)
            if chars is None:
                s += 1
                continue
            text = chars
            t = pieces
            best: int | None = t - 1 if 15 <= len(text) <= 34 and stdnum_iban.is_valid(text) else None
            while t < n and len(text) < 34:
                unit = stream.unit(t)
                piece = self._iban_piece(stream, t)
                if piece is None:
                    if unit.word in _FILLERS:
                        t += 1
                        continue
                    break
                value, t_last = piece
                text += value
                t = t_last + 1
                if 15 <= len(text) <= 34 and stdnum_iban.is_valid(text):
                    best = t - 1
            g = stream.positions[s]
            if best is None and self.context.has(g, 25, _IBAN_WORDS) and len(text) >= 14:
                best = t - 1
            if best is not None:
                self._add(Kind.IBAN, stream, s, best)
                s = best + 1
            else:
                s += 1

    def _iban_prefix(self, stream: _Stream, s: int) -> tuple[str | None, int]:
        """The country letters (and check digits when written with them) starting at stream index ``s``."""
        unit = stream.unit(s)
        bare = unit.text.strip(_EDGE_PUNCTUATION)
        if re.fullmatch(r"[A-Za-z]{2}\d{2}[A-Za-z0-9]*", bare):
            return bare.upper(), s + 1
        if re.fullmatch(r"[A-Za-z]{2}", bare) and bare.isupper():
            return bare, s + 1
        first = _spelled_letter(stream, s)
        if first is not None:
            second = _spelled_letter(stream, first[1])
            if second is not None and (first[0] + second[0]) in _IBAN_COUNTRIES:
                return first[0] + second[0], second[1]
        return None, s

    def _iban_piece(self, stream: _Stream, t: int) -> tuple[str, int] | None:
        """The characters of the IBAN read at stream index ``t`` (a digit token, number words, letters)."""
        unit = stream.unit(t)
        bare = unit.text.strip(_EDGE_PUNCTUATION)
        if unit.digits is not None and not unit.plus:
            return unit.digits, t
        if unit.number_word and unit.word != "et":
            digits, _first, last = _word_groups(_number_words(stream, t))[0]
            return (digits, t + last) if digits is not None else None
        if _ALNUM.match(bare) and any(ch.isdigit() for ch in bare):
            return bare.upper(), t
        if len(bare) == 1 and bare.isalpha():
            return bare.upper(), t
        return None

    # E-mails: written, or spelled "jean point dupont arobase gmail point com".
    def _emails(self, stream: _Stream) -> None:
        n = len(stream.positions)
        for s in range(n):
            unit = stream.unit(s)
            bare = unit.text.strip(_EDGE_PUNCTUATION)
            if _EMAIL_WRITTEN.match(bare):
                self._add(Kind.EMAIL, stream, s, s)
                continue
            if unit.word not in _EMAIL_AT and bare != "@":
                continue
            first = self._local_part(stream, s)
            last = self._domain(stream, s)
            if first is not None and last is not None:
                self._add(Kind.EMAIL, stream, first, last)

    def _local_part(self, stream: _Stream, at: int) -> int | None:
        s = at - 1
        if s < 0 or not stream.unit(s).parts:
            return None
        first = s
        while s - 1 >= 0 and at - s < 14:
            previous = stream.unit(s - 1)
            if previous.word in _EMAIL_JOINERS and s - 2 >= 0 and stream.unit(s - 2).parts:
                first = s = s - 2
            elif len(previous.clean) == 1 and previous.clean.isalnum() and len(stream.unit(s).clean) <= 1:
                first = s = s - 1  # spelled letter by letter
            elif (
                (stream.unit(s).digits is not None or stream.unit(s).number_word)
                and previous.parts
                and (previous.word not in _EMAIL_STOP)
            ):
                first = s = s - 1  # "leroy 75 arobase": the name before the number
            elif previous.digits is not None and len(stream.unit(s).clean) <= 1:
                first = s = s - 1
            else:
                break
        return first

    def _domain(self, stream: _Stream, at: int) -> int | None:
        n = len(stream.positions)
        s = at + 1
        if s >= n or not stream.unit(s).parts:
            return None
        last = s
        dotted = "." in stream.unit(s).text.strip(_EDGE_PUNCTUATION)
        while s + 2 < n and stream.unit(s + 1).word in {"point", ".", "tiret"} and stream.unit(s + 2).parts:
            dotted = dotted or stream.unit(s + 1).word in {"point", "."}
            last = s = s + 2
            if stream.unit(s).text.rstrip().endswith((".", ",", "?", "!")):
                break
        return last if dotted else None

    # Dates of birth: a date said after "né(e) le", "date de naissance"...
    def _birth_dates(self, stream: _Stream) -> None:
        n = len(stream.positions)
        s = 0
        while s < n:
            cue = self.context.birth(stream.positions[s])
            if cue is not None and cue in self.used_cues:
                cue = None
            end = self._date_at(stream, s)
            if end is None or (cue is None and not self.context.birth_after(stream.positions[end])):
                s += 1
                continue
            if cue is not None:
                self._consume(cue, stream.positions[end])
            self._add(Kind.DOB, stream, s, end)
            s = end + 1

    def _consume(self, cue: int, end: int) -> None:
        """The birth cue ``cue`` has its date (ending at global index ``end``), unless a correction follows it
        ("non pardon, le 5 juin")."""
        following = {part for g in range(end + 1, min(len(self.units), end + 5)) for part in self.units[g].parts}
        if not following & _CORRECTIONS:
            self.used_cues.add(cue)

    def _date_at(self, stream: _Stream, s: int) -> int | None:
        """The last stream index of a spoken date starting at ``s`` ("[le] 12 mars [1985]", "en 1985"), else None."""
        n = len(stream.positions)
        unit = stream.unit(s)
        if unit.word in {"le", "en"}:
            return None  # the date starts with the number; "le" itself is no personal data
        if unit.word in _MONTHS:
            return None
        # The day: "1er", "premier", a digit token or number words up to 31, then a month; or a year alone.
        day_last: int | None = None
        if unit.clean in {"1er", "premier", "1ᵉʳ"} or unit.digits is not None and not unit.plus:
            day_last = s
        elif unit.number_word:
            digits, _f, last = _word_groups(_number_words(stream, s))[0]
            if digits is None:
                return None
            day_last = s + last
        if day_last is None:
            return None
        first_digits = unit.digits if unit.digits is not None else None
        numeric = self._numeric_date(stream, s)
        if numeric is not None:
            return numeric
        if day_last + 1 < n and stream.unit(day_last + 1).word in _MONTHS:
            month = day_last + 1
            end = month
            if month + 1 < n:
                year = self._number_end(stream, month + 1)
                if year is not None:
                    end = year
            return end
        if first_digits is not None and len(first_digits) == 4 and 1900 <= int(first_digits) <= 2030:
            return s  # a birth year
        words_year = _word_groups([stream.unit(u).clean for u in range(s, day_last + 1)])[0][0]
        if words_year is not None and len(words_year) == 4 and 1900 <= int(words_year) <= 2030:
            return day_last
        return None

    def _numeric_date(self, stream: _Stream, s: int) -> int | None:
        """The last stream index of a date said as three numbers from ``s`` ("11 01 1975"), else None."""
        values: list[str] = []
        t = s
        while t < len(stream.positions) and len(values) < 3:
            end = self._number_end(stream, t)
            if end is None:
                break
            unit = stream.unit(t)
            spoken = [stream.unit(u).clean for u in range(t, end + 1)]
            values.append(unit.digits if unit.digits is not None else (_word_groups(spoken)[0][0] or ""))
            t = end + 1
        if len(values) == 3 and all(v.isdigit() for v in values):
            day, month, year = (int(v) for v in values)
            if 1 <= day <= 31 and 1 <= month <= 12 and len(values[2]) in (2, 4):
                return t - 1
        return None

    def _number_end(self, stream: _Stream, s: int) -> int | None:
        """The last stream index of the number starting at ``s`` (a digit token or number words), else None."""
        unit = stream.unit(s)
        if unit.digits is not None and not unit.plus:
            return s
        if not unit.number_word:
            return None
        digits, _first, last = _word_groups(_number_words(stream, s))[0]
        return s + last if digits is not None else None

    # Addresses: "12 rue des Lilas, 69003 Lyon", announced.
    def _addresses(self, stream: _Stream) -> None:
        n = len(stream.positions)
        s = 0
        while s < n:
            unit = stream.unit(s)
            if unit.word not in _STREET_STRONG and unit.word not in _STREET_WEAK:
                s += 1
                continue
            g = stream.positions[s]
            announced = self.context.has(g, 15, _ADDRESS_WORDS)
            first = self._street_number(stream, s)
            if first is None and not announced:
                s += 1
                continue
            last = self._street_name_end(stream, s)
            named = any(stream.unit(t).text[:1].isupper() for t in range(s + 1, last + 1))
            if unit.word in _STREET_WEAK and not announced and not (first is not None and named):
                s += 1  # "place", "route", "cours"...: an address when announced, or numbered and named
                continue
            if first is None and not named:  # "la rue d'à côté": no number, no name
                s += 1
                continue
            self._add(Kind.ADDRESS, stream, first if first is not None else s, last)
            s = last + 1

    def _street_number(self, stream: _Stream, s: int) -> int | None:
        """The first stream index of the street number right before the street type at ``s`` ("12", "12 bis",
        "douze"), else None. "une place" is no address."""
        t = s - 1
        if t >= 0 and stream.unit(t).word in _STREET_SUFFIX:
            t -= 1
        if t < 0:
            return None
        unit = stream.unit(t)
        if unit.digits is not None and len(unit.digits) <= 4 and not unit.plus:
            return t
        if re.fullmatch(r"\d{1,4}(?:bis|ter|b)", unit.clean):
            return t
        if unit.number_word and unit.word not in {"un", "une", "et"}:
            first = t
            while first - 1 >= 0 and stream.unit(first - 1).number_word and s - first < 6:
                first -= 1
            return first
        return None

    def _street_name_end(self, stream: _Stream, s: int) -> int:
        """The last stream index of the street name after the street type at ``s``, with the postal code and city
        when they follow."""
        n = len(stream.positions)
        last = s
        t = s + 1
        while t < n and t - s <= 6:
            unit = stream.unit(t)
            if stream.unit(last).text.rstrip().endswith((",", ".", "?", "!", ";")) and last > s:
                break
            if unit.digits is not None or unit.word in {"a", "au", "c", "est", "oui", "non", "et"} or not unit.parts:
                break
            if stream.positions[t] != stream.positions[t - 1] + 1:  # the other speaker spoke in between
                break
            last = t
            t += 1
        # The city after "à" when it ends the sentence or clause ("15 chemin des Vignes à Avignon, ...").
        t = last + 1
        if (
            t + 1 < n
            and stream.unit(t).word == "a"
            and stream.unit(t + 1).parts
            and not stream.unit(t).text.endswith(_GROUP_END)
        ):
            city = stream.unit(t + 1)
            if city.text.rstrip().endswith(_GROUP_END) or t + 2 >= n:
                return t + 1
        # A postal code and the city: "69003 Lyon" / "69003, Lyon".
        while t < n and stream.unit(t).word in _FILLERS:
            t += 1
        if t < n and (stream.unit(t).digits or "") and len(stream.unit(t).digits or "") == 5:
            last = t
            if t + 1 < n and stream.unit(t + 1).parts and stream.unit(t + 1).text[:1].isupper():
                last = t + 1
        return last


_IBAN_COUNTRIES = frozenset(
    [
        "AD",
        "AT",
        "BE",
        "BG",
        "CH",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GB",
        "GI",
        "GR",
        "HR",
        "HU",
        "IE",
        "IS",
        "IT",
        "LI",
        "LT",
        "LU",
        "LV",
        "MC",
        "MT",
        "NL",
        "NO",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "SM",
    ]
)


# --- Resolution and output ----------------------------------------------------------------------------------------


def _resolve(findings: list[_Finding], kinds: frozenset[Kind]) -> dict[int, Kind]:
    """Unit index → kind, the higher-priority kind keeping a unit two findings claim; then only ``kinds``."""
    owner: dict[int, Kind] = {}
    rank = {kind: i for i, kind in enumerate(PRIORITY)}
    for finding in sorted(findings, key=lambda f: rank[f.kind]):
        for g in finding.units:
            owner.setdefault(g, finding.kind)
    return {g: kind for g, kind in owner.items() if kind in kinds}


def _kinds(kinds: Iterable[Kind | str]) -> frozenset[Kind]:
    return frozenset(Kind(kind) for kind in kinds)


def _text_units(text: str) -> tuple[list[_Unit], list[tuple[int, int]]]:
    units: list[_Unit] = []
    spans: list[tuple[int, int]] = []
    for i, match in enumerate(re.finditer(r"\S+", text)):
        units.append(_Unit(i, match.group(), None))
        spans.append(match.span())
    return units, spans


def scan_text(text: str, kinds: Iterable[Kind | str] = ALL_KINDS) -> list[TextFinding]:
    """The personal data of ``text``: whole tokens, contiguous tokens of one kind merged into one finding (the
    trailing punctuation of its last token left outside), in text order."""
    units, spans = _text_units(text)
    owner = _resolve(_Scanner(units).scan(), _kinds(kinds))
    findings: list[TextFinding] = []
    g = 0
    while g < len(units):
        kind = owner.get(g)
        if kind is None:
            g += 1
            continue
        last = g
        while last + 1 < len(units) and owner.get(last + 1) == kind:
            last += 1
        end = spans[last][1]
        trailing = _TRAILING_PUNCTUATION.search(units[last].text)
        if trailing and trailing.start() > 0:
            end -= len(trailing.group())
        findings.append(TextFinding(kind, spans[g][0], end))
        g = last + 1
    return findings


def redact_text(text: str, kinds: Iterable[Kind | str] = ALL_KINDS) -> str:
    """``text`` with each finding replaced by its placeholder."""
    out: list[str] = []
    at = 0
    for finding in scan_text(text, kinds):
        out.append(text[at : finding.start])
        out.append(PLACEHOLDERS[finding.kind])
        at = finding.end
    out.append(text[at:])
    return "".join(out)


def redact_words(words: Sequence[Mapping[str, Any]], kinds: Iterable[Kind | str] = ALL_KINDS) -> list[dict[str, Any]]:
    """Speech-to-text words with the personal data of ``kinds`` replaced: each contiguous run of covered words of
    one speaker becomes one placeholder word (its first word's start and speaker, its last word's end and
    trailing punctuation); the spacing items inside a run are dropped; everything else is kept as it was.
    Returns new dicts for the items it changes (the input is not modified)."""
    indices = [i for i, word in enumerate(words) if word.get("type", "word") == "word"]
    units = [_Unit(i, str(words[i].get("text", "")), words[i].get("speaker_id")) for i in indices]
    owner = _resolve(_Scanner(units).scan(), _kinds(kinds))
    covered = {units[g].key: kind for g, kind in owner.items()}
    if not covered:
        return [dict(word) for word in words]
    out: list[dict[str, Any]] = []
    open_placeholder: dict[str, Any] | None = None
    open_kind: Kind | None = None
    pending: list[dict[str, Any]] = []  # spacing since the last word emitted
    for i, word in enumerate(words):
        if word.get("type", "word") != "word":
            pending.append(dict(word))
            continue
        kind = covered.get(i)
        if (
            kind is not None
            and open_placeholder is not None
            and kind == open_kind
            and word.get("speaker_id") == open_placeholder["speaker_id"]
        ):
            pending.clear()  # the spacing inside a run goes with it
            open_placeholder["end"] = word.get("end", open_placeholder["end"])
            open_placeholder["text"] = PLACEHOLDERS[kind] + _suffix(str(word.get("text", "")))
            continue
        out.extend(pending)
        pending.clear()
        if kind is None:
            out.append(dict(word))
            open_placeholder = open_kind = None
            continue
        open_placeholder = {
            "text": PLACEHOLDERS[kind] + _suffix(str(word.get("text", ""))),
            "start": word.get("start"),
            "end": word.get("end"),
            "type": "word",
            "speaker_id": word.get("speaker_id"),
            "logprob": None,
        }
        open_kind = kind
        out.append(open_placeholder)
    out.extend(pending)
    return out


def redact_transcript(
    words: Sequence[Mapping[str, Any]], text: str, kinds: Iterable[Kind | str] = STORAGE_KINDS
) -> tuple[list[dict[str, Any]], str] | None:
    """A stored transcript (its words and text) with ``kinds`` redacted: ``(words, text)``, the text rebuilt
    from the redacted words when they changed (else the text redacted on its own); None when nothing changed."""
    redacted = redact_words(words, kinds)
    if len(redacted) != len(words) or any(a.get("text") != b.get("text") for a, b in zip(redacted, words, strict=True)):
        return redacted, words_text(redacted)
    clean = redact_text(text, kinds)
    return (list(redacted), clean) if clean != text else None


def _suffix(text: str) -> str:
    trailing = _TRAILING_PUNCTUATION.search(text)
    return trailing.group() if trailing and trailing.start() > 0 else ""


def words_text(words: Sequence[Mapping[str, Any]]) -> str:
    """The transcript text of a word list: the words and spacing items joined (a space between words when the
    list has no spacing item), as the speech-to-text engine writes its ``text``."""
    if any(word.get("type") == "spacing" for word in words):
        return "".join(str(word.get("text", "")) for word in words if word.get("type", "word") in {"word", "spacing"})
    return " ".join(str(word.get("text", "")) for word in words if word.get("type", "word") == "word")


# --- Structured data (a CRM record's fields) ----------------------------------------------------------------------

# A field whose (folded) name holds one of these is that kind of personal data whatever its value looks like.
FIELD_KINDS: tuple[tuple[str, Kind], ...] = (
    ("naissance", Kind.DOB),
    ("telephone", Kind.PHONE),
    ("portable", Kind.PHONE),
    ("mobile", Kind.PHONE),
    ("phone", Kind.PHONE),
    ("number", Kind.PHONE),  # from_number / to_number
    ("email", Kind.EMAIL),
    ("mail", Kind.EMAIL),
    ("destinataire", Kind.EMAIL),
    ("iban", Kind.IBAN),
    ("nir", Kind.NIR),
    ("securite sociale", Kind.NIR),
    ("adresse", Kind.ADDRESS),
    ("code postal", Kind.ADDRESS),
)


def _field_kind(name: str) -> Kind | None:
    folded = _fold(name.replace("_", " "))
    for fragment, kind in FIELD_KINDS:
        if fragment in folded:
            return kind
    return None


def redact_data(value: Any, kinds: Iterable[Kind | str] = ALL_KINDS) -> Any:
    """A copy of a JSON-like value with its personal data replaced: the value of a field named for a kind
    (``telephone``, ``email``, ``date_naissance``, ``adresse``...) by its placeholder, every other string by
    ``redact_text``. Other scalars are kept."""
    wanted = _kinds(kinds)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            kind = _field_kind(str(key))
            if (
                kind is not None
                and kind in wanted
                and item not in (None, "", [], {})
                and not isinstance(item, (Mapping, list, tuple))
            ):
                out[key] = PLACEHOLDERS[kind]
            else:
                out[key] = redact_data(item, wanted)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_data(item, wanted) for item in value]
    if isinstance(value, str):
        return redact_text(value, wanted)
    return value
