"""Evidence gate: is a quote given by the audit LLM really in the call transcript?

Pure Python (no database, no Django settings): the caller passes the match threshold
(``settings.EVIDENCE_MATCH_THRESHOLD``, 90 by default). An ``EvidenceIndex`` is built once per
fiche timeline (a list of speaker turns ``{call_id, speaker, start, end, text}``) and checks any
number of quotes. A quote is verified only when every rule holds; otherwise the first failing
reason, in this order, is reported:

1. ``too_short`` -- fewer than 4 words after normalization (fillers removed, elided ``l'``,
   ``d'``... not counted) and no number: such a quote proves nothing.
2. ``not_found`` -- no single speaker turn contains it: the normalized quote is aligned with
   ``rapidfuzz.fuzz.partial_ratio_alignment`` against a few candidate turns (pre-selected by an
   inverted index of normalized tokens, rarest tokens weighing most) and the best score must reach
   the threshold. Quotes are never stitched across turns.
3. ``number_mismatch`` -- inside the aligned span (refined to whole tokens by a token-level
   alignment) the numbers must be the quote's: same multiset, and in the same order.
4. ``negation_mismatch`` -- same multiset of negation markers (``pas``, ``jamais``, ``aucun``,
   ``sans``, ``rien``, ``ni``, ``non``, ``guère``, and ``plus`` / ``personne`` after ``ne``;
   ``ne`` itself is ignored because speech drops it). A quote may not stop just before the negation
   of its last verb: a marker closing a ``ne`` of the span, or a ``pas``/``jamais``/``rien``... right
   after the span's end, counts as part of the span; so does a ``non`` right before the span that
   prefixes its first word (``non-remboursable``, ``frais non remboursables``; not an answer such as
   ``non non ça me dérange pas``). Negation words (and ``oui``, ``avec``, their opposites) are left
   out of the character alignment of rule 2 so that a flipped negation is reported as such, not as
   ``not_found``. ``non remboursable`` / ``remboursable`` is thus a negation mismatch.
5. ``antonym_mismatch`` -- a word of the quote was turned into its opposite in the span (one token of
   slack on each side, as for rule 6):

   - a lexical antonym of ``_ANTONYM_TABLE`` (``obligatoire``/``facultatif``, ``inclus``/``exclu``,
     ``gratuit``/``payant``, ``avant``/``après``, ``acceptez``/``refusez``, ``remboursé`` or ``pris en
     charge``/``à votre charge``, ``plus``/``moins``...; one line a pair, word families folded): the
     quote holds one side of a pair and the span the other side instead (multisets, as for negations:
     the quote has more of its side than the span, the span more of the other side than the quote).
     ``oui``/``non`` and ``avec``/``sans`` are there too, for a ``non``/``sans`` just outside the span;
   - a negative prefix (``im-``, ``in-``, ``ir-``, ``il-``, ``dé-``/``dés-``, ``mé-``/``més-``,
     ``non-``): a content word of the quote missing from the span while the span holds the same word
     with (or without) such a prefix, the remainder (>= 4 letters) being the other word up to a final
     ``s``/``e``: ``possible``/``impossible``, ``légal``/``illégal``, ``intéressé``/``désintéressé``,
     ``content``/``mécontent``, ``connues``/``inconnu``. Words that merely start with those letters
     (``important``, ``demande``, ``dérange``) still match themselves and their spelling slips
     (``enregistré``/``enregistrée``); only a word the quote does not have can be called flipped.

   Antonyms never count as spelling slips (rule 6) nor widen the span, and both sides of a pair
   (and a word with or without its negative prefixes) align identically in rule 2: a flipped antonym
   is reported as such, a quote that is not in the call stays ``not_found``.
6. ``not_found`` -- every content word of the quote (not a stop word, number or negation) must be
   in the span, allowing speech-to-text spelling slips: Levenshtein <= 1 for words of >= 5
   letters, <= 2 for >= 9 letters, exact otherwise. One swapped word rejects the quote.
7. ``speaker_mismatch`` -- when the caller names a speaker, the quote must be verified in one of
   that speaker's turns; it is reported when it is only verified in the other speaker's turns.

Normalization (both sides): lower case, accents folded, apostrophes and punctuation dropped,
fillers removed (``euh``, ``heu``, ``bah``, ``ben``, ``hum``, ``hein``...), stutters collapsed,
French number words read as digits with ``text_to_num.alpha2digit`` (``deux ans`` = ``2 ans``),
decimal commas and amounts (``84,50 €`` = ``84 euros 50`` = ``84.5 euros``), percentages
(``20 %`` = ``vingt pour cent``) and spaced digit groups (``07 012 345`` = ``07012345``).

``QuoteCheck.matched_text`` is the transcript's own words of the aligned span and ``start``/``end``
are interpolated inside the turn by character position.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.distance import Indel, Levenshtein
from text_to_num import alpha2digit

from core.french import NUMBER_WORDS
from core.metrics import EVIDENCE_VERDICTS

logger = logging.getLogger("audits.evidence")

__all__ = ["REASONS", "EvidenceIndex", "QuoteCheck", "normalize", "verify_quotes"]

REASONS = (
    "not_found",
    "number_mismatch",
    "negation_mismatch",
    "antonym_mismatch",
    "too_short",
    "speaker_mismatch",
)

MIN_WORDS = 4
CANDIDATE_TURNS = 5  # turns aligned per quote (plus a few of the named speaker's)
SPEAKER_CANDIDATE_TURNS = 3
SPAN_MARGIN = 2  # tokens added on each side of rapidfuzz's character window before refining it

_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)*|[nN]°|[^\W\d_]+|[€%]")
_FILLER_RE = re.compile(r"(?:e+u+h*m*|h+e+u+h*|h+u+m+|h*m+h*m*|b+a+h+|b+e+h+|b+e+n+|h+e+i+n+|a+h+|o+h+|e+h+)")
_DECIMAL_RE = re.compile(r"\d+(?:,\d+)?")
_NUMBER_JOINERS = frozenset({"et", "virgule"})
_WORD_MAP = {
    "euro": "euros",
    "eur": "euros",
    "centime": "centimes",
    "premiere": "premier",
    "aucune": "aucun",
    "okay": "ok",
    "mails": "mail",
    "emails": "email",
}
_SYMBOLS = {"€": "euros", "%": "pourcent", "n°": "numero", "N°": "numero"}
_UNITS_AFTER_NUMBER = {"h": "heures", "j": "jours", "mn": "minutes", "min": "minutes"}
_NEGATIONS = frozenset({"pas", "jamais", "aucun", "sans", "rien", "ni", "non", "guere", "nullement"})
_NE_NEGATIONS = frozenset({"plus", "personne"})  # negations only after "ne" / "n'"
_NE = frozenset({"ne", "n"})
_TRAILING_NEGATIONS = frozenset({"pas", "jamais", "rien", "plus", "personne", "guere", "aucun"})
_CLAUSE_END = re.compile(r"[.,;:!?…]")
_NOT_TRAILING = frozenset({("de", "souci"), ("de", "soucis"), ("de", "probleme"), ("de", "problemes")})
_CLITICS = frozenset({"l", "d", "j", "n", "qu", "s", "c", "m", "t"})
_STOPWORDS = _CLITICS | frozenset(
    [
        "le",
        "la",
        "les",
        "un",
        "une",
        "des",
        "de",
        "du",
        "a",
        "au",
        "aux",
        "en",
        "y",
        "ce",
        "ca",
        "se",
        "que",
        "qui",
        "dont",
        "ne",
    ]
)
_ORDINAL_ONE = frozenset({"er", "ere"})

# Opposites, one line a pair: (side A, side B), each a comma-separated list of folded words (lower case,
# no accents: what ``normalize`` yields) or phrases of several words. A word may sit in several pairs
# (``interdit``). ``non`` and ``sans`` are negations (rule 4) whose terms here (``oui``/``non``,
# ``avec``/``sans``) only matter just outside the span: inside, the negation rule has judged them.
_ANTONYM_TABLE: tuple[tuple[str, str], ...] = (
    (
        "obligatoire, obligatoires, obligatoirement",
        "facultatif, facultatifs, facultative, facultatives, facultativement, "
        "optionnel, optionnelle, optionnels, optionnelles",
    ),
    ("inclus, incluse, incluses, inclut, compris, comprise, comprises", "exclu, exclus, exclue, exclues, exclut"),
    ("gratuit, gratuite, gratuits, gratuites, gratuitement", "payant, payante, payants, payantes"),
    ("avant", "apres"),
    (
        "accepte, acceptee, acceptes, acceptees, accepter, acceptez, acceptons, acceptent, acceptera, "
        "accepterez, accepteriez, acceptation",
        "refuse, refusee, refuses, refusees, refuser, refusez, refusons, refusent, refusera, refuserez, "
        "refuseriez, refus",
    ),
    (
        "rembourse, remboursee, rembourses, remboursees, rembourser, remboursez, remboursera, rembourseront, "
        "remboursement, remboursements, remboursable, remboursables, "
        "pris en charge, prise en charge, prises en charge, a notre charge, a nos frais",
        "a votre charge, a vos frais, a votre frais, a sa charge, a ses frais, a leur charge, a leurs frais, "
        "a ta charge, a tes frais",
    ),
    (
        "autorise, autorisee, autorises, autorisees, autoriser, autorisez, autorisation",
        "interdit, interdite, interdits, interdites, interdire, interdiction",
    ),
    ("possible, possibles", "interdit, interdite, interdits, interdites"),
    (
        "active, activee, actives, activees, activer, activez, activation",
        "desactive, desactivee, desactives, desactivees, desactiver, desactivez, desactivation",
    ),
    ("plus", "moins"),  # "plus" after "ne" is a negation, not this
    ("maximum, maximal, maximale, maximaux, maximales", "minimum, minimal, minimale, minimaux, minimales"),
    (
        "augmente, augmentee, augmentes, augmentees, augmenter, augmentent, augmentera, augmentation, "
        "augmentations, hausse, hausses, majoration, majore, majoree",
        "baisse, baissee, baisses, baissees, baisser, baissent, baissera, diminue, diminuee, diminuer, "
        "diminuent, diminution, reduction, reductions, reduit, reduite",
    ),
    (
        "ouvert, ouverte, ouverts, ouvertes, ouvrir, ouverture",
        "ferme, fermee, fermes, fermees, fermer, fermeture",
    ),
    ("debut, debute, debuter", "fin"),
    ("valable, valables, valide, valides", "expire, expiree, expires, expirees, perime, perimee"),
    ("fixe, fixes", "variable, variables"),
    ("oui", "non"),
    ("avec", "sans"),
)
_NEGATIONS_WITH_ANTONYMS = frozenset({"non", "sans"})
# Negative prefixes, folded (dé-/dés- = de/des, mé-/més- = me/mes), and the shortest remainder they leave.
_NEGATIVE_PREFIXES_3 = frozenset({"non", "des", "mes"})
_NEGATIVE_PREFIXES_2 = frozenset({"im", "in", "ir", "il", "de", "me"})
_MIN_STEM = 4
# Left out of the aligned skeleton with the negations: their opposites are negations ("non", "sans").
_SKELETON_DROPPED = frozenset({"oui", "avec"})
# A "non" just before the span prefixes its first word ("frais non remboursables") unless it answers
# (turn start, "mais non", "oui non"...) or the next word is not an adjective or participle.
_NON_ANSWER_CONTEXT = frozenset({"non", "oui", "si", "mais", "et", "ou", "bon", "alors", "donc", "que", "dit", "dis"})
_NOT_ADJECTIVES = frozenset({"vous", "nous", "tous", "plus", "sous", "merci", "voila", "desole", "desolee"})
_ADJECTIVE_ENDINGS = (
    "é", "ée", "és", "ées", "able", "ables", "ible", "ibles", "if", "ifs", "ive", "ives", "u", "ue", "us", "ues",
    "is", "ise", "ises", "it", "ite", "its", "ites", "al", "ale", "ales", "aux", "el", "elle", "els", "elles",
)  # fmt: skip


def _antonym_tables() -> tuple[
    dict[str, tuple[tuple[int, int], ...]],
    dict[str, tuple[tuple[tuple[str, ...], tuple[int, int]], ...]],
    tuple[str, ...],
]:
    """Words -> (pair, side) terms; phrase last words -> (preceding words, term); the skeleton word of each
    pair (one per group of pairs sharing a word, so that every opposite aligns with every other)."""
    words: dict[str, list[tuple[int, int]]] = {}
    phrases: dict[str, list[tuple[tuple[str, ...], tuple[int, int]]]] = {}
    group = list(range(len(_ANTONYM_TABLE)))

    def root(pair: int) -> int:
        while group[pair] != pair:
            pair = group[pair]
        return pair

    for pair, sides in enumerate(_ANTONYM_TABLE):
        for side, terms in enumerate(sides):
            for term in terms.split(","):
                parts = tuple(term.split())
                assert parts and all(p.isascii() and p.islower() for p in parts), term
                if len(parts) > 1:
                    phrases.setdefault(parts[-1], []).append((parts[:-1], (pair, side)))
                    continue
                for other, _ in words.get(parts[0], ()):
                    group[root(other)] = root(pair)
                words.setdefault(parts[0], []).append((pair, side))
    skeleton = tuple(_ANTONYM_TABLE[root(pair)][0].split(",")[0].strip() for pair in range(len(_ANTONYM_TABLE)))
    return (
        {w: tuple(terms) for w, terms in words.items()},
        {w: tuple(entries) for w, entries in phrases.items()},
        skeleton,
    )


_ANTONYM_WORDS, _ANTONYM_PHRASES, _PAIR_SKELETON = _antonym_tables()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class QuoteCheck:
    """The gate's verdict on one quote. Location fields are those of the aligned span, if any."""

    quote: str
    verified: bool
    reason: str | None
    score: float
    speaker: str | None
    call_id: str | None
    start: float | None
    end: float | None
    matched_text: str | None


# --------------------------------------------------------------------------- normalization


@dataclass(slots=True)
class _Tok:
    text: str
    start: int  # character offsets in the original text
    end: int
    num: bool = False


@dataclass(slots=True)
class Normalized:
    """A text's normalized tokens and their offsets in the original text.

    ``string`` joins the tokens; ``skeleton`` joins them without negation words (``ne``, ``pas``...), with
    each side of an antonym pair written alike and negative prefixes stripped (``impossible`` ->
    ``possible``), which is what is aligned: a flipped negation or antonym then leaves the score intact
    and is reported as such. ``skeleton_offsets[k]`` is where skeleton token ``k`` (token
    ``skeleton_tokens[k]``) starts. ``antonyms`` maps a token index to its ``(pair, side)`` terms of
    ``_ANTONYM_TABLE`` (a phrase's terms on each of its words).
    """

    texts: list[str]
    nums: list[bool]
    starts: list[int]
    ends: list[int]
    negations: list[bool]
    antonyms: dict[int, tuple[tuple[int, int], ...]]
    string: str
    skeleton: str
    skeleton_offsets: list[int]
    skeleton_tokens: list[int]

    @property
    def word_count(self) -> int:
        return sum(1 for t in self.texts if t not in _CLITICS)


@lru_cache(maxsize=65_536)
def _fold(word: str) -> str:
    word = word.lower()
    if word.isascii():
        return word
    word = word.replace("œ", "oe").replace("æ", "ae")
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


@lru_cache(maxsize=4_096)
def _is_filler(word: str) -> bool:
    return _FILLER_RE.fullmatch(word) is not None


def _canonical_number(raw: str) -> str:
    """``84,50`` -> ``84.5``; ``07.012.345`` -> ``07012345``; integers keep their leading zeros."""
    parts = re.split(r"[.,]", raw)
    if len(parts) == 1:
        return raw
    if len(parts) > 2:
        return "".join(parts)
    try:
        value = Decimal(f"{parts[0]}.{parts[1]}").normalize()
    except InvalidOperation:
        return "".join(parts)
    return format(value, "f")


@lru_cache(maxsize=8_192)
def _spell_numbers(words: tuple[str, ...]) -> tuple[str, ...]:
    text = " ".join("zéro" if w == "zero" else w for w in words)
    return tuple(alpha2digit(text, "fr", threshold=1.5).split())


def _is_int(tok: _Tok) -> bool:
    return tok.num and tok.text.isdigit()


def _read_number_words(toks: list[_Tok]) -> list[_Tok]:
    """Replace runs of French number words (``quatre vingt quatre``) by digit tokens."""
    out: list[_Tok] = []
    i, n = 0, len(toks)
    while i < n:
        if toks[i].num or toks[i].text not in NUMBER_WORDS:
            out.append(toks[i])
            i += 1
            continue
        j = i + 1
        while j < n and not toks[j].num and (toks[j].text in NUMBER_WORDS or toks[j].text in _NUMBER_JOINERS):
            j += 1
        while toks[j - 1].text in _NUMBER_JOINERS:
            j -= 1
        run = toks[i:j]
        words = tuple(t.text for t in run)
        pieces = _spell_numbers(words)
        if len(pieces) > 1 and pieces[0] == "1" and words[0] in ("un", "une"):  # article: "un trois pièces"
            pieces = ("un", *pieces[1:])
        if len(pieces) == len(words):  # nothing read as a number, or one number word each ("deux")
            for tok, piece in zip(run, pieces, strict=True):
                out.append(_number_or_word(piece, tok.start, tok.end))
        else:
            start, end = run[0].start, run[-1].end
            out.extend(_number_or_word(piece, start, end) for piece in pieces)
        i = j
    return out


def _number_or_word(piece: str, start: int, end: int) -> _Tok:
    if _DECIMAL_RE.fullmatch(piece):
        return _Tok(_canonical_number(piece), start, end, True)
    word = _fold(piece)
    return _Tok("0", start, end, True) if word == "zero" else _Tok(word, start, end)


def _combine_numbers(toks: list[_Tok]) -> list[_Tok]:
    """Amounts, decimals, digit groups, units; then a lone ``1`` reads as the word ``un``."""
    out: list[_Tok] = []
    i, n = 0, len(toks)
    while i < n:
        tok = toks[i]
        nxt = toks[i + 1].text if i + 1 < n else ""
        if _is_int(tok) and nxt in ("euros", "virgule") and i + 2 < n and _is_int(toks[i + 2]):
            cents = toks[i + 2]
            if nxt == "virgule":
                value = _canonical_number(f"{tok.text},{cents.text}")
                out.append(_Tok(value, tok.start, cents.end, True))
                i += 3
                continue
            if len(cents.text) <= 2:
                value = _canonical_number(f"{tok.text},{int(cents.text):02d}")
                out.append(_Tok(value, tok.start, cents.end, True))
                out.append(_Tok("euros", toks[i + 1].start, toks[i + 1].end))
                i += 4 if i + 3 < n and toks[i + 3].text == "centimes" else 3
                continue
        if (
            _is_int(tok)
            and nxt == "euros"
            and i + 4 < n
            and toks[i + 2].text == "et"
            and _is_int(toks[i + 3])
            and len(toks[i + 3].text) <= 2
            and toks[i + 4].text == "centimes"
        ):
            value = _canonical_number(f"{tok.text},{int(toks[i + 3].text):02d}")
            out.append(_Tok(value, tok.start, toks[i + 4].end, True))
            out.append(_Tok("euros", toks[i + 1].start, toks[i + 1].end))
            i += 5
            continue
        if _is_int(tok) and out and _is_int(out[-1]):  # spaced digit groups: 07 012 345, 1 200
            out[-1] = _Tok(out[-1].text + tok.text, out[-1].start, tok.end, True)
            i += 1
            continue
        if out and out[-1].num and tok.text in _UNITS_AFTER_NUMBER:
            tok = _Tok(_UNITS_AFTER_NUMBER[tok.text], tok.start, tok.end)
        out.append(tok)
        i += 1
    result: list[_Tok] = []
    for k, tok in enumerate(out):
        if tok.num and tok.text == "1":
            following = out[k + 1].text if k + 1 < len(out) else ""
            if following in _ORDINAL_ONE:
                tok = _Tok("premier", tok.start, out[k + 1].end)
            else:
                tok = _Tok("un", tok.start, tok.end)
        elif not tok.num and tok.text in _ORDINAL_ONE and result and result[-1].text == "premier":
            continue
        result.append(tok)
    return result


def _negation_flags(texts: Sequence[str]) -> list[bool]:
    flags: list[bool] = []
    for i, word in enumerate(texts):
        if word in _NEGATIONS:
            flags.append(True)
        elif word in _NE_NEGATIONS:  # "n'est plus", "ne voit personne", "personne ne"
            flags.append(
                any(w in _NE for w in texts[max(0, i - 3) : i])
                or (word == "personne" and any(w in _NE for w in texts[i + 1 : i + 3]))
            )
        else:
            flags.append(False)
    return flags


def normalize(text: str) -> Normalized:
    """Normalize a transcript turn or a quote (see the module docstring)."""
    toks: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        raw = m.group()
        if raw[0].isdigit():
            toks.append(_Tok(_canonical_number(raw), m.start(), m.end(), True))
            continue
        word = _SYMBOLS.get(raw) or _fold(raw)
        if _is_filler(word):
            continue
        word = _WORD_MAP.get(word, word)
        if toks and not toks[-1].num:
            prev = toks[-1]
            if word == prev.text and word not in NUMBER_WORDS:  # stutter: "le le", "je je"
                prev.end = m.end()
                continue
            if prev.text == "e" and word == "mail":  # e-mail, e mail
                toks[-1] = _Tok("email", prev.start, m.end())
                continue
        if (
            word == "cent"
            and toks
            and toks[-1].text == "pour"
            and len(toks) >= 2
            and (toks[-2].num or toks[-2].text in NUMBER_WORDS)
        ):
            toks[-1] = _Tok("pourcent", toks[-1].start, m.end())
            continue
        toks.append(_Tok(word, m.start(), m.end()))
    toks = _combine_numbers(_read_number_words(toks))
    texts = [t.text for t in toks]
    nums = [t.num for t in toks]
    negations = _negation_flags(texts)
    antonyms: dict[int, tuple[tuple[int, int], ...]] = {}
    in_phrase: set[int] = set()  # a phrase's words before its last: one skeleton word for the phrase
    for i, word in enumerate(texts):
        if nums[i] or (negations[i] and word not in _NEGATIONS_WITH_ANTONYMS):
            continue
        terms = _ANTONYM_WORDS.get(word)
        if terms is not None:
            antonyms[i] = terms
            continue
        for before, term in _ANTONYM_PHRASES.get(word, ()):
            n = len(before)
            if i >= n and tuple(texts[i - n : i]) == before:
                for j in range(i - n, i + 1):  # each word: the span may end inside the phrase
                    antonyms[j] = (term,)
                in_phrase.update(range(i - n, i))
                break
    kept: list[int] = []
    skeleton: list[str] = []
    offsets: list[int] = []
    pos = 0
    for i, word in enumerate(texts):
        if negations[i] or word in _NE or word in _SKELETON_DROPPED or i in in_phrase:
            continue
        if i in antonyms:
            word = _PAIR_SKELETON[antonyms[i][0][0]]
        elif not nums[i]:
            word = _unprefixed(word)[0]
        kept.append(i)
        skeleton.append(word)
        offsets.append(pos)
        pos += len(word) + 1
    return Normalized(
        texts=texts,
        nums=nums,
        starts=[t.start for t in toks],
        ends=[t.end for t in toks],
        negations=negations,
        antonyms=antonyms,
        string=" ".join(texts),
        skeleton=" ".join(skeleton),
        skeleton_offsets=offsets,
        skeleton_tokens=kept,
    )


# --------------------------------------------------------------------------- matching


def _allowed_edits(word: str) -> int:
    return 2 if len(word) >= 9 else 1 if len(word) >= 5 else 0


def _word_matches(word: str, other: str) -> bool:
    if word == other:
        return True
    k = _allowed_edits(word)
    return (
        k > 0
        and abs(len(word) - len(other)) <= k
        and Levenshtein.distance(word, other, score_cutoff=k) <= k
        and not _opposed(word, other)
    )


@lru_cache(maxsize=65_536)
def _unprefixed(word: str) -> tuple[str, int]:
    """``word`` without its negative prefixes (each leaving >= 4 letters), and how many were removed:
    ``desinteresse`` -> (``teresse``, 2), ``interesse`` -> (``teresse``, 1), ``possible`` -> (``possible``, 0)."""
    count = 0
    while True:
        if len(word) >= 3 + _MIN_STEM and word[:3] in _NEGATIVE_PREFIXES_3:
            word = word[3:]
        elif len(word) >= 2 + _MIN_STEM and word[:2] in _NEGATIVE_PREFIXES_2:
            word = word[2:]
        else:
            return word, count
        count += 1


def _prefix_flipped(word: str, other: str) -> bool:
    """One word is the other behind a negative prefix (``possible``/``impossible``, ``legal``/``illegal``,
    ``interesse``/``desinteresse``), the remainder of >= 4 letters being the other word up to a final
    ``s``/``e`` (``impossibles``/``possible``). ``enregistre``/``enregistree`` or ``important``/``importante``
    never are: no negative prefix turns one into the other."""
    if len(word) < len(other):
        word, other = other, word
    bare = other.rstrip("s").rstrip("e")
    return any(
        word[:n] in prefixes and len(word) - n >= _MIN_STEM and word[n:].rstrip("s").rstrip("e") == bare
        for n, prefixes in ((3, _NEGATIVE_PREFIXES_3), (2, _NEGATIVE_PREFIXES_2))
    )


def _opposed(word: str, other: str) -> bool:
    """Antonyms: opposite sides of a pair of ``_ANTONYM_TABLE``, or a negative prefix apart."""
    terms = _ANTONYM_WORDS.get(word)
    if terms is not None:
        others = _ANTONYM_WORDS.get(other, ())
        if any((pair, 1 - side) in others for pair, side in terms):
            return True
    return _prefix_flipped(word, other)


@dataclass(slots=True)
class _Turn:
    index: int
    call_id: str | None
    speaker: str | None
    start: float
    end: float
    text: str
    norm: Normalized


@dataclass(slots=True)
class _Attempt:
    turn: _Turn
    score: float
    reason: str | None = None  # None: verified in this turn
    span: tuple[int, int] | None = None  # token range in turn.norm

    def rank(self) -> tuple[float, int]:
        """Higher is better: the best score, then the earliest turn."""
        return self.score, -self.turn.index


class EvidenceIndex:
    """Normalized turns of one timeline plus an inverted index of their tokens."""

    def __init__(self, turns: Iterable[Mapping[str, Any]], *, threshold: float = 90.0) -> None:
        self.threshold = float(threshold)
        self._turns: list[_Turn] = []
        postings: dict[str, list[int]] = {}
        for i, turn in enumerate(turns):
            text = str(turn.get("text") or "")
            start = float(turn.get("start") or 0.0)
            end = turn.get("end")
            speaker = turn.get("speaker")
            call_id = turn.get("call_id")
            norm = normalize(text)
            self._turns.append(
                _Turn(
                    index=i,
                    call_id=None if call_id is None else str(call_id),
                    speaker=None if speaker is None else str(speaker).strip().lower(),
                    start=start,
                    end=max(start, float(end)) if end is not None else start,
                    text=text,
                    norm=norm,
                )
            )
            for token in set(norm.texts):
                postings.setdefault(token, []).append(i)
        n = max(1, len(self._turns))
        self._postings = postings
        self._idf = {t: math.log(1 + n / len(p)) for t, p in postings.items()}
        self._common = max(20, n // 8)  # tokens in more turns than this only count when nothing rarer matches

    def __len__(self) -> int:
        return len(self._turns)

    # ----------------------------------------------------------------------- public

    def check(self, quote: str, *, speaker: str | None = None) -> QuoteCheck:
        """The verdict on ``quote`` (said by ``speaker`` when given), counted in the gate's metrics."""
        result = self._check(quote, speaker)
        _count_verdict(result)
        return result

    def _check(self, quote: str, speaker: str | None) -> QuoteCheck:
        q = normalize(quote)
        wanted = speaker.strip().lower() if speaker else None
        if q.word_count < MIN_WORDS and not any(q.nums):
            return QuoteCheck(quote, False, "too_short", 0.0, None, None, None, None, None)
        attempts = [self._attempt(q, self._turns[i]) for i in self._candidates(q, wanted)]
        if not attempts:
            return QuoteCheck(quote, False, "not_found", 0.0, None, None, None, None, None)
        verified = [a for a in attempts if a.reason is None]
        if verified:
            own = [a for a in verified if wanted is None or a.turn.speaker == wanted]
            if own:
                return self._result(quote, max(own, key=_Attempt.rank), verified=True)
            return self._result(quote, max(verified, key=_Attempt.rank), reason="speaker_mismatch")
        located = [a for a in attempts if a.span is not None]
        if located:  # the failure seen in the named speaker's turns first, then the best aligned
            best = max(located, key=lambda a: (wanted is None or a.turn.speaker == wanted, *a.rank()))
            return self._result(quote, best, reason=best.reason)
        best_score = max(a.score for a in attempts)
        return QuoteCheck(quote, False, "not_found", round(best_score, 2), None, None, None, None, None)

    def check_many(self, quotes: Iterable[str | Mapping[str, Any] | tuple[str, str | None]]) -> list[QuoteCheck]:
        """Check quotes given as strings, ``(quote, speaker)`` pairs or ``{"quote", "speaker"}`` dicts."""
        results: list[QuoteCheck] = []
        for item in quotes:
            if isinstance(item, str):
                results.append(self.check(item))
            elif isinstance(item, Mapping):
                results.append(self.check(str(item.get("quote") or ""), speaker=item.get("speaker")))
            else:
                text, who = item
                results.append(self.check(text, speaker=who))
        return results

    # ----------------------------------------------------------------------- internals

    def _candidates(self, q: Normalized, wanted: str | None) -> list[int]:
        tokens = set(q.texts)
        rare = [t for t in tokens if len(self._postings.get(t, ())) <= self._common]
        if len([t for t in rare if t not in _STOPWORDS]) < 2:
            rare = [t for t in tokens if t in self._postings]
        scores: dict[int, float] = {}
        for token in rare:
            weight = self._idf.get(token)
            if weight is None:
                continue
            if token in _STOPWORDS:
                weight *= 0.25
            for i in self._postings[token]:
                scores[i] = scores.get(i, 0.0) + weight
        chosen = heapq.nlargest(CANDIDATE_TURNS, scores, key=scores.__getitem__)
        if wanted is not None:
            own = [i for i in scores if self._turns[i].speaker == wanted]
            chosen += [
                i for i in heapq.nlargest(SPEAKER_CANDIDATE_TURNS, own, key=scores.__getitem__) if i not in chosen
            ]
        return chosen

    def _attempt(self, q: Normalized, turn: _Turn) -> _Attempt:
        t = turn.norm
        if not t.skeleton or not q.skeleton:
            return _Attempt(turn, 0.0, "not_found")
        if len(q.skeleton) <= len(t.skeleton):
            al = fuzz.partial_ratio_alignment(q.skeleton, t.skeleton)
            if al is None:
                return _Attempt(turn, 0.0, "not_found")
            score, lo, hi = al.score, al.dest_start, al.dest_end
        else:  # a quote longer than the turn can only be the whole turn
            score, lo, hi = fuzz.ratio(q.skeleton, t.skeleton), 0, len(t.skeleton)
        if score < self.threshold:
            return _Attempt(turn, score, "not_found")
        k_lo = max(0, bisect_right(t.skeleton_offsets, lo) - 1)
        k_hi = max(k_lo + 1, bisect_left(t.skeleton_offsets, hi))
        first = max(0, t.skeleton_tokens[k_lo] - SPAN_MARGIN)
        last = min(len(t.texts), t.skeleton_tokens[k_hi - 1] + 1 + SPAN_MARGIN)
        span = _refine_span(q.texts, t.texts, first, last)
        if span is None:
            return _Attempt(turn, score, "not_found")
        return _Attempt(turn, score, _span_reason(q, t, turn.text, *span), span)

    def _result(
        self, quote: str, attempt: _Attempt, *, verified: bool = False, reason: str | None = None
    ) -> QuoteCheck:
        turn, (a, b) = attempt.turn, attempt.span or (0, 0)
        char_lo, char_hi = turn.norm.starts[a], turn.norm.ends[b - 1]
        length = max(1, len(turn.text))
        duration = turn.end - turn.start
        return QuoteCheck(
            quote=quote,
            verified=verified,
            reason=None if verified else reason,
            score=round(attempt.score, 2),
            speaker=turn.speaker,
            call_id=turn.call_id,
            start=round(turn.start + duration * char_lo / length, 3),
            end=round(turn.start + duration * char_hi / length, 3),
            matched_text=turn.text[char_lo:char_hi],
        )


def _count_verdict(result: QuoteCheck) -> None:
    """``evidence_gate_verdicts_total{verified, reason}``: ``ok`` when verified, else one of ``REASONS``
    (``other`` for anything else, so the label stays a bounded set). A metric never fails a check."""
    try:
        if result.verified:
            EVIDENCE_VERDICTS.labels("true", "ok").inc()
        else:
            EVIDENCE_VERDICTS.labels("false", result.reason if result.reason in REASONS else "other").inc()
    except Exception:
        logger.warning("evidence_metrics_failed", exc_info=True)


def _refine_span(quote: list[str], turn: list[str], first: int, last: int) -> tuple[int, int] | None:
    """Token range of ``turn[first:last]`` aligned with the quote: first to last exactly equal token,
    widened over edge tokens that are spelling variants (or other numbers) of the quote's unmatched edge tokens."""
    window = turn[first:last]
    blocks = [op for op in Indel.opcodes(quote, window) if op.tag == "equal"]
    if not blocks:
        return None
    q_lo, w_lo = blocks[0].src_start, blocks[0].dest_start
    q_hi, w_hi = blocks[-1].src_end, blocks[-1].dest_end
    while q_lo > 0 and w_lo > 0 and _loosely_equal(quote[q_lo - 1], window[w_lo - 1]):
        q_lo, w_lo = q_lo - 1, w_lo - 1
    while q_hi < len(quote) and w_hi < len(window) and _loosely_equal(quote[q_hi], window[w_hi]):
        q_hi, w_hi = q_hi + 1, w_hi + 1
    return first + w_lo, first + w_hi


def _loosely_equal(word: str, other: str) -> bool:
    if word[0].isdigit() or other[0].isdigit():  # a different number stays in the span: the number rule judges it
        return word[0].isdigit() and other[0].isdigit()
    return _word_matches(word, other) or (
        len(word) >= 4 and fuzz.ratio(word, other) >= 75 and not _opposed(word, other)
    )


def _span_reason(q: Normalized, t: Normalized, text: str, a: int, b: int) -> str | None:
    span_numbers = [t.texts[i] for i in range(a, b) if t.nums[i]]
    if [w for w, num in zip(q.texts, q.nums, strict=True) if num] != span_numbers:  # same numbers, same order
        return "number_mismatch"
    counted = {i for i in range(a, b) if t.negations[i]}
    for i in range(a, b):  # "ne" inside the span whose "pas"/"rien"... lies just past its end
        if t.texts[i] in _NE:
            j = next((j for j in range(i + 1, min(i + 5, len(t.texts))) if t.negations[j]), None)
            if j is not None and j >= b:
                counted.add(j)
    if (
        b < len(t.texts)
        and t.negations[b]
        and t.texts[b] in _TRAILING_NEGATIONS
        and not (tuple(t.texts[b + 1 : b + 3]) in _NOT_TRAILING or _CLAUSE_END.search(text, t.ends[b - 1], t.starts[b]))
    ):
        counted.add(b)  # "ça m'intéresse | pas" but not "d'accord | pas de souci" nor "d'accord. | Pas..."
    if a > 0 and t.negations[a - 1] and t.texts[a - 1] == "non" and _prefixes_next(t, text, a - 1):
        counted.add(a - 1)  # "frais non | remboursables", "non-| inclus"
    span_negations = Counter(t.texts[i] for i in counted)
    if Counter(w for w, neg in zip(q.texts, q.negations, strict=True) if neg) != span_negations:
        return "negation_mismatch"
    lo, hi = max(0, a - 1), min(len(t.texts), b + 1)
    if q.antonyms:  # the quote says one side of a pair more often than the span, which says the other more
        quote_terms = Counter(term for terms in q.antonyms.values() for term in terms)
        span_terms = Counter(term for i in range(lo, hi) for term in t.antonyms.get(i, ()))
        for (pair, side), n in quote_terms.items():
            if n > span_terms[pair, side] and span_terms[pair, 1 - side] > quote_terms[pair, 1 - side]:
                return "antonym_mismatch"
    words = set(t.texts[lo:hi])
    missing: list[str] = []
    for word, num, neg in zip(q.texts, q.nums, q.negations, strict=True):
        if num or neg or word in _STOPWORDS or word in _NE or word in words:
            continue
        if not any(_word_matches(word, other) for other in words):
            missing.append(word)
    if any(_prefix_flipped(word, other) for word in missing for other in words):
        return "antonym_mismatch"
    return "not_found" if missing else None


def _prefixes_next(t: Normalized, text: str, i: int) -> bool:
    """Whether the ``non`` at token ``i`` is the prefix of the next word (``non-inclus``, ``frais non
    remboursables``) rather than an answer (``non, merci``, ``non non ça me dérange pas``)."""
    j = i + 1
    gap = text[t.ends[i] : t.starts[j]]
    if gap.strip() == "-":
        return True
    if gap.strip() or i == 0 or t.texts[i - 1] in _NON_ANSWER_CONTEXT or t.nums[j] or t.negations[j]:
        return False
    word = t.texts[j]
    if len(word) < _MIN_STEM or word in _STOPWORDS or word in _NOT_ADJECTIVES:
        return False
    return word in _ANTONYM_WORDS or text[t.starts[j] : t.ends[j]].lower().endswith(_ADJECTIVE_ENDINGS)


def verify_quotes(
    turns: Iterable[Mapping[str, Any]],
    quotes: Iterable[str | Mapping[str, Any] | tuple[str, str | None]],
    *,
    threshold: float = 90.0,
) -> list[QuoteCheck]:
    """Build an index of ``turns`` and check every quote (see ``EvidenceIndex.check_many``)."""
    return EvidenceIndex(turns, threshold=threshold).check_many(quotes)
