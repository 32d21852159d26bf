"""The redactor of personal data (``privacy.redaction``), on the labelled set ``pii_fr.jsonl`` and on small cases.

Pure tests: no database. The labelled set's lines are checked per span (one test case each):
- every ``card`` and ``code`` span is found (never stored in clear), with all kinds and with ``STORAGE_KINDS``;
- every ``price`` and ``orias`` keep span is untouched (evidence for compliance control points);
- every other pii span is found and every other keep span untouched, except on lines marked ``known_miss``
  (hard forms: counted by ``python -m bench pii``, not asserted).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from stdnum import iban, luhn
from stdnum.fr import nir

from privacy.redaction import (
    ALL_KINDS,
    PLACEHOLDERS,
    STORAGE_KINDS,
    Kind,
    TextFinding,
    redact_text,
    redact_words,
    scan_text,
)
from transcriptions.simulator.script import transcript_for, truth_for

DATA = Path(__file__).resolve().parent / "pii_fr.jsonl"
KEEP_CATEGORIES = frozenset({"price", "orias", "policy", "date", "other"})
ALWAYS_KINDS = frozenset({Kind.CARD, Kind.CODE})  # asserted on every line, known_miss or not
ALWAYS_CATEGORIES = frozenset({"price", "orias"})


# Written blind to the redactor (its first-run figures are in the bench's history); asserted span by span too.
HOLDOUT = DATA.with_name("pii_fr_holdout.jsonl")


def _lines(path: Path = DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


LINES = _lines()
SPAN_LINES = LINES + _lines(HOLDOUT)


def _cases(key: str, wanted: Iterable[str], *, skip_known_miss: bool) -> list[Any]:
    field = "kind" if key == "pii" else "category"
    wanted = frozenset(wanted)
    cases = []
    for line in SPAN_LINES:
        if skip_known_miss and line.get("known_miss"):
            continue
        seen: dict[str, int] = {}
        for item in line[key]:
            if item[field] not in wanted:
                continue
            seen[item[field]] = seen.get(item[field], 0) + 1
            cases.append(pytest.param(line, item, id=f"{line['id']}-{item[field]}-{seen[item[field]]}"))
    return cases


def _show(text: str, findings: Iterable[TextFinding]) -> str:
    return ", ".join(f"{f.kind}:{text[f.start : f.end]!r}" for f in findings) or "nothing"


def _covered(text: str, findings: Iterable[TextFinding], start: int, end: int, kinds: Iterable[Kind]) -> bool:
    """Every alphanumeric character of ``text[start:end]`` is inside a finding of one of ``kinds``."""
    spans = [(f.start, f.end) for f in findings if f.kind in frozenset(kinds)]
    return all(any(s <= i < e for s, e in spans) for i in range(start, end) if text[i].isalnum())


def _touching(findings: Iterable[TextFinding], start: int, end: int) -> list[TextFinding]:
    return [f for f in findings if f.start < end and start < f.end]


def assert_found(text: str, span: str, kind: Kind, kinds: Iterable[Kind] = ALL_KINDS) -> None:
    start = text.index(span)
    findings = scan_text(text, kinds)
    assert _covered(text, findings, start, start + len(span), {kind}), (
        f"{kind} {span!r} not covered in {text!r}; scan_text found {_show(text, findings)}"
    )


def assert_untouched(text: str, span: str) -> None:
    start = text.index(span)
    findings = scan_text(text)
    touching = _touching(findings, start, start + len(span))
    assert not touching, f"{span!r} must stay in {text!r}; scan_text found {_show(text, touching)}"


def assert_no_kind(text: str, kind: Kind) -> None:
    findings = scan_text(text)
    assert not [f for f in findings if f.kind == kind], f"no {kind} expected in {text!r}; found {_show(text, findings)}"


# --- Reading the spoken numbers of the labelled spans (for the integrity checks) ------------------------------

_SMALL = {
    "zéro": 0,
    "un": 1,
    "une": 1,
    "deux": 2,
    "trois": 3,
    "quatre": 4,
    "cinq": 5,
    "six": 6,
    "sept": 7,
    "huit": 8,
    "neuf": 9,
    "dix": 10,
    "onze": 11,
    "douze": 12,
    "treize": 13,
    "quatorze": 14,
    "quinze": 15,
    "seize": 16,
    "vingt": 20,
    "vingts": 20,
    "trente": 30,
    "quarante": 40,
    "cinquante": 50,
    "soixante": 60,
}
_SKIPPED = frozenset({"euh", "heu", "clé"})  # said between the groups: they end a number


def _compound(word: str) -> int | None:
    """``"soixante-dix-huit"`` -> 78, ``"quatre-vingts"`` -> 80; None when not a number below 100."""
    parts = [p for p in word.split("-") if p != "et"]
    if not parts or any(p not in _SMALL for p in parts):
        return None
    total = 0
    for i, part in enumerate(parts):
        if part.startswith("vingt") and i > 0 and parts[i - 1] == "quatre":
            total += 80 - 4
        else:
            total += _SMALL[part]
    return total


def spoken_chars(span: str) -> str:
    """The digits (and capital letters) a span reads out, in order: ``"zéro six, douze"`` -> ``"0612"``,
    ``"F R soixante-seize"`` -> ``"FR76"``, ``"quatre mille neuf cent soixante-dix, mille douze"`` -> ``"49701012"``.

    A number said in words is one group (its digits without leading zeros, which are said "zéro"); a group ends at
    punctuation, a filler, a digit group, or a word that cannot continue it. Raises ValueError on any other word."""
    out: list[str] = []
    number: list[int] | None = None  # [thousands, below a thousand]
    pending_et = False

    def flush() -> None:
        nonlocal number
        if number is not None:
            out.append(str(number[0] + number[1]))
            number = None

    for raw in span.split():
        for token in re.findall(r"\d+|[^\W\d_]+(?:-[^\W\d_]+)*|\+", raw):
            low = token.lower()
            if token.isdigit() or re.fullmatch(r"[A-Z]{1,2}", token):
                flush()
                out.append(token)
            elif token == "+" or low == "plus":
                flush()
                out.append("+")
            elif low in _SKIPPED:
                flush()
            elif low == "et":
                pending_et = True
                continue
            elif low == "zéro":
                flush()
                out.append("0")
            elif low in ("cent", "cents"):
                if number is not None and 1 <= number[1] <= 9:
                    number[1] *= 100
                elif number is not None and number[1] == 0 and number[0]:
                    number[1] = 100
                else:
                    flush()
                    number = [0, 100]
            elif low in ("mille", "mil"):
                if number is not None and number[0] == 0 and number[1]:
                    number = [number[1] * 1000, 0]
                else:
                    flush()
                    number = [1000, 0]
            else:
                value = _compound(low)
                if value is None:
                    raise ValueError(f"not a number word: {token!r} in {span!r}")
                et_unit = pending_et and value in (1, 11)  # "vingt et un", "soixante et onze"
                if number is not None and (
                    (et_unit and number[1] % 100 in (20, 30, 40, 50, 60))
                    or (number[1] % 100 == 0 and (number[0] or number[1]))  # "cent vingt", "mille douze"
                ):
                    number[1] += value
                else:
                    flush()
                    number = [0, value]
            pending_et = False
        if raw[-1] in ",.;:?!":
            flush()
    flush()
    return "".join(out)


def test_spoken_chars_reads_french_numbers() -> None:
    assert spoken_chars("quatre mille neuf cent soixante-dix, mille douze") == "49701012"
    assert spoken_chars("zéro six, euh, trente, vingt et un, soixante et onze") == "0630" + "2171"
    assert spoken_chars("F R soixante-seize, zéro zéro zéro un") == "FR760001"
    assert spoken_chars("huit cent vingt-deux mille quatre cent soixante-trois dix mille cinq") == "82246310005"
    assert spoken_chars("plus trente-trois six quatre-vingts") == "+33680"
    assert spoken_chars("FR14 2004 3M02 606") == "FR1420043M02606"


# --- The labelled set's integrity -------------------------------------------------------------------------------

CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]")


def _check_value(kind: str, span: str) -> str | None:
    """Why the span is not a valid value of its kind (None when it is)."""
    if kind in ("email", "dob", "address"):
        if kind == "email" and "@" not in span and "arobase" not in span:
            return "an e-mail without @ nor 'arobase'"
        return None
    chars = spoken_chars(span)
    digits = re.sub(r"\D", "", chars)
    if kind == "card":
        if len(digits) >= 13:
            if not (len(digits) <= 19 and luhn.is_valid(digits) and CARD_PREFIX.match(digits)):
                return f"card number {digits} not Luhn-valid or no known prefix"
            if digits[:2] in ("34", "37") and len(digits) != 15:
                return "an Amex number has 15 digits"
        elif len(digits) == 4 and not 1 <= int(digits[:2]) <= 12:
            return f"expiry {digits}: no such month"
        elif len(digits) not in (3, 4):
            return f"{digits}: neither a card number, an expiry nor a CVV"
    elif kind == "iban" and not iban.is_valid(chars):
        return f"IBAN {chars} invalid"
    elif kind == "nir" and not nir.is_valid(digits):
        return f"NIR {digits} invalid"
    elif kind == "phone":
        number = phonenumbers.parse(chars, "FR")
        if not phonenumbers.is_valid_number(number) or number.country_code != 33:
            return f"phone {chars} is not a valid French number"
    elif kind == "code" and not 4 <= len(digits) <= 8:
        return f"code {digits}: not 4 to 8 digits"
    return None


def test_labelled_set_integrity() -> None:
    problems: list[str] = []
    ids: set[str] = set()
    for number, raw in enumerate(DATA.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: invalid JSON ({exc})")
            continue
        where = f"line {number} ({line.get('id')})"
        if not set(line) <= {"id", "text", "pii", "keep", "note", "known_miss"} or not {
            "id",
            "text",
            "pii",
            "keep",
        } <= set(line):
            problems.append(f"{where}: unexpected keys {sorted(line)}")
            continue
        if line["id"] in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(line["id"])
        text = line["text"]
        spans: list[tuple[int, int]] = []
        for item in line["pii"] + line["keep"]:
            span = item["span"]
            if text.count(span) != 1:
                problems.append(f"{where}: {span!r} occurs {text.count(span)} times")
                continue
            start = text.index(span)
            spans.append((start, start + len(span)))
            if span != span.strip() or not span:
                problems.append(f"{where}: {span!r} has surrounding spaces")
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            if start < end:
                problems.append(f"{where}: labelled spans overlap")
        for item in line["pii"]:
            if item.get("kind") not in set(Kind):
                problems.append(f"{where}: unknown kind {item.get('kind')!r}")
                continue
            try:
                reason = _check_value(item["kind"], item["span"])
            except ValueError as exc:
                reason = str(exc)
            if reason:
                problems.append(f"{where}: {reason}")
        for item in line["keep"]:
            if item.get("category") not in KEEP_CATEGORIES:
                problems.append(f"{where}: unknown keep category {item.get('category')!r}")
    assert not problems, "\n".join(problems)


def test_labelled_set_size() -> None:
    per_kind = {kind: sum(item["kind"] == kind for line in LINES for item in line["pii"]) for kind in Kind}
    assert all(n >= 15 for n in per_kind.values()), per_kind
    assert all(per_kind[kind] >= 25 for kind in (Kind.CARD, Kind.CODE, Kind.PHONE)), per_kind
    assert sum(1 for line in LINES if not line["pii"]) >= 60
    known_miss = sum(1 for line in LINES if line.get("known_miss"))
    assert known_miss <= 0.05 * len(LINES), "known_miss is for a few genuinely hard forms"
    for line in LINES:
        if line.get("known_miss"):
            assert not any(item["kind"] in ALWAYS_KINDS for item in line["pii"]), line["id"]


# --- The labelled set, span by span ------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "item"), _cases("pii", ALWAYS_KINDS, skip_known_miss=False))
def test_card_and_code_found(line: dict[str, Any], item: dict[str, str]) -> None:
    assert_found(line["text"], item["span"], Kind(item["kind"]))
    assert_found(line["text"], item["span"], Kind(item["kind"]), STORAGE_KINDS)


@pytest.mark.parametrize(("line", "item"), _cases("keep", ALWAYS_CATEGORIES, skip_known_miss=False))
def test_price_and_orias_untouched(line: dict[str, Any], item: dict[str, str]) -> None:
    assert_untouched(line["text"], item["span"])


@pytest.mark.parametrize(("line", "item"), _cases("pii", set(Kind) - ALWAYS_KINDS, skip_known_miss=True))
def test_other_pii_found(line: dict[str, Any], item: dict[str, str]) -> None:
    assert_found(line["text"], item["span"], Kind(item["kind"]))


@pytest.mark.parametrize(("line", "item"), _cases("keep", KEEP_CATEGORIES - ALWAYS_CATEGORIES, skip_known_miss=True))
def test_other_keep_untouched(line: dict[str, Any], item: dict[str, str]) -> None:
    assert_untouched(line["text"], item["span"])


def test_findings_are_well_formed() -> None:
    for line in LINES:
        text = line["text"]
        for finding in scan_text(text):
            assert isinstance(finding.kind, Kind)
            assert 0 <= finding.start < finding.end <= len(text), (line["id"], finding)
            assert not text[finding.start].isspace() and not text[finding.end - 1].isspace(), (line["id"], finding)


def test_scan_text_kinds_filter() -> None:
    text = "ma carte 4970 1012 3456 7893 et mon portable 06 12 34 56 78"
    assert {f.kind for f in scan_text(text)} == {Kind.CARD, Kind.PHONE}
    assert {f.kind for f in scan_text(text, {Kind.PHONE})} == {Kind.PHONE}
    assert {f.kind for f in scan_text(text, STORAGE_KINDS)} == {Kind.CARD}
    assert scan_text(text, set()) == []


# --- One recognizer at a time -------------------------------------------------------------------------------------

CARD_DIGIT_WORDS = "quatre neuf sept zéro un zéro un deux trois quatre cinq six sept huit neuf trois"
CARD_PAIRS = "quarante-neuf soixante-dix dix douze trente-quatre cinquante-six soixante-dix-huit quatre-vingt-treize"
CARD_FOURS = (
    "quatre mille neuf cent soixante-dix, mille douze, trois mille quatre cent cinquante-six, "
    "sept mille huit cent quatre-vingt-treize"
)
NIR_WORDS = "un, quatre-vingt-cinq, zéro trois, soixante-neuf, cent vingt-trois, quatre cent cinquante-six, zéro neuf"
PHONE_WORDS = "zéro six douze trente-quatre cinquante-six soixante-dix-huit"
PHONE_INTERNATIONAL = "plus trente-trois " + PHONE_WORDS.removeprefix("zéro ")
DOB_WORDS = "douze mars mille neuf cent quatre-vingt-cinq"

POSITIVES = [  # (kind, text, the span to cover)
    (Kind.CARD, "c'est le 4970 1012 3456 7893, voilà", "4970 1012 3456 7893"),
    (Kind.CARD, f"alors {CARD_DIGIT_WORDS}", CARD_DIGIT_WORDS),
    (Kind.CARD, f"c'est {CARD_PAIRS}", CARD_PAIRS),
    (Kind.CARD, f"{CARD_FOURS}.", CARD_FOURS),
    (Kind.CARD, "le cryptogramme c'est 4 5 7", "4 5 7"),
    (Kind.IBAN, "mon IBAN: FR76 3000 4000 3112 3456 7890 111", "FR76 3000 4000 3112 3456 7890 111"),
    (Kind.IBAN, "c'est FR7630004000311234567890111.", "FR7630004000311234567890111"),
    (Kind.NIR, "numéro de sécu 1 85 03 69 123 456 09", "1 85 03 69 123 456 09"),
    (Kind.NIR, f"{NIR_WORDS}.", NIR_WORDS),
    (Kind.PHONE, "rappelez-moi au 06 12 34 56 78", "06 12 34 56 78"),
    (Kind.PHONE, f"c'est le {PHONE_WORDS}", PHONE_WORDS),
    (Kind.PHONE, f"c'est le {PHONE_INTERNATIONAL}", PHONE_INTERNATIONAL),
    (Kind.EMAIL, "c'est jean.dupont@gmail.com", "jean.dupont@gmail.com"),
    (Kind.EMAIL, "jean point dupont arobase gmail point com", "jean point dupont arobase gmail point com"),
    (Kind.CODE, "Vous avez reçu un code par SMS ? Oui, 4 8 2 9 1 7.", "4 8 2 9 1 7"),
    (Kind.CODE, "le code c'est quatre huit deux neuf un sept", "quatre huit deux neuf un sept"),
    (Kind.DOB, "je suis né le 12 mars 1985", "12 mars 1985"),
    (Kind.DOB, f"date de naissance: le {DOB_WORDS}", DOB_WORDS),
    (Kind.ADDRESS, "j'habite au 12 rue des Lilas, 69003 Lyon", "12 rue des Lilas, 69003 Lyon"),
]


@pytest.mark.parametrize(("kind", "text", "span"), POSITIVES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(POSITIVES)])
def test_recognizer_positive(kind: Kind, text: str, span: str) -> None:
    assert_found(text, span, kind)


NEGATIVES = [
    (Kind.CARD, "c'est le 4970 1012 3456 7894"),  # Luhn check fails
    (Kind.CARD, "le total c'est 4 970,12 euros"),
    (Kind.IBAN, "c'est FR77 3000 4000 3112 3456 7890 111"),  # check digits wrong (and no "IBAN" said)
    (Kind.NIR, "c'est le 1 85 03 69 123 456 10"),  # key wrong (and no "sécurité sociale" said)
    (Kind.PHONE, "numéro ORIAS 07 012 345"),
    (Kind.PHONE, "la référence du devis c'est le 54 78 12 96 03"),
    (Kind.EMAIL, "c'est un point important, le deuxième point aussi"),
    (Kind.EMAIL, "vous tapez arobase puis le nom de domaine"),
    (Kind.CODE, "le code postal c'est 69003"),
    (Kind.CODE, "c'est l'article L. 112-9 du code des assurances"),
    (Kind.CODE, "votre numéro de dossier c'est le 482917"),
    (Kind.DOB, "le contrat démarre le 12 mars 2025"),
    (Kind.DOB, "en cas de naissance, vous avez trente jours pour nous prévenir, avant le 15 septembre"),
    (Kind.ADDRESS, "il habite dans la rue d'à côté"),
    (Kind.ADDRESS, "vous avez 2 places de parking ?"),
]


@pytest.mark.parametrize(("kind", "text"), NEGATIVES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(NEGATIVES)])
def test_recognizer_negative(kind: Kind, text: str) -> None:
    assert_no_kind(text, kind)


@pytest.mark.parametrize(
    "text",
    [
        "29,90 euros par mois",
        "quarante-neuf euros quatre-vingt-dix",
        "1 200 euros",
        "numéro ORIAS 07 012 345",
        "immatriculé à l'ORIAS sous le numéro 07012345",
        "ORIAS zéro sept, zéro douze, trois cent quarante-cinq",
        "à partir du 1er mars 2025",
        "vous avez quatorze jours",
        "j'ai soixante-deux ans",
    ],
)
def test_false_friends_alone(text: str) -> None:
    assert scan_text(text) == [], _show(text, scan_text(text))


# --- redact_text -------------------------------------------------------------------------------------------------


def test_redact_text_placeholders() -> None:
    assert redact_text("écrivez à jean.dupont@gmail.com merci") == "écrivez à [EMAIL] merci"
    assert redact_text("mon numéro c'est le 06 12 34 56 78") == "mon numéro c'est le [TÉLÉPHONE]"
    carded = redact_text("c'est le 4970 1012 3456 7893. Merci.")
    assert carded.startswith("c'est le [CARTE]") and carded.endswith(" Merci."), carded
    assert redact_text("la cotisation est de 29,90 euros par mois") == "la cotisation est de 29,90 euros par mois"


def test_redact_text_kinds() -> None:
    text = "carte 4970 1012 3456 7893, téléphone 06 12 34 56 78"
    stored = redact_text(text, STORAGE_KINDS)
    assert PLACEHOLDERS[Kind.CARD] in stored and "06 12 34 56 78" in stored and "4970" not in stored
    redacted = redact_text(text)
    assert PLACEHOLDERS[Kind.PHONE] in redacted and "06 12" not in redacted


def test_redact_text_removes_cards_and_codes() -> None:
    """On the labelled set: no card or code span is left in the redacted text."""
    problems = []
    for line in LINES:
        redacted = redact_text(line["text"])
        for item in line["pii"]:
            if item["kind"] in ALWAYS_KINDS and item["span"] in redacted:
                problems.append(f"{line['id']}: {item['span']!r} left in {redacted!r}")
    assert not problems, "\n".join(problems)


def test_redact_text_is_idempotent() -> None:
    problems = []
    for line in LINES:
        once = redact_text(line["text"])
        twice = redact_text(once)
        if once != twice:
            problems.append(f"{line['id']}: {once!r} -> {twice!r}")
    assert not problems, "\n".join(problems)


def test_placeholders_never_match() -> None:
    alone = " ".join(PLACEHOLDERS.values())
    assert scan_text(alone) == []
    context = (
        "le code c'est [CODE], la carte [CARTE] expire fin [CARTE], né le [DATE_NAISSANCE], au [ADRESSE], "
        "mail [EMAIL], téléphone [TÉLÉPHONE], sécu [NIR], IBAN [IBAN]."
    )
    assert scan_text(context) == [], _show(context, scan_text(context))


# --- redact_words ------------------------------------------------------------------------------------------------

CLIENT, AGENT = "speaker_1", "speaker_0"


def make_words(*turns: tuple[str, str]) -> list[dict[str, Any]]:
    """Speech-to-text items for ``(speaker, text)`` turns: a word per token, a spacing after each word but the last
    (with that word's speaker), 0.4 s per word, 0.05 s per spacing."""
    items: list[dict[str, Any]] = []
    clock = 0.0
    for speaker, text in turns:
        for token in text.split():
            if items:
                previous = items[-1]["speaker_id"]
                items.append(
                    {
                        "text": " ",
                        "start": clock,
                        "end": round(clock + 0.05, 3),
                        "type": "spacing",
                        "speaker_id": previous,
                    }
                )
                clock = round(clock + 0.05, 3)
            word = {"text": token, "start": clock, "end": round(clock + 0.4, 3), "type": "word", "speaker_id": speaker}
            items.append(word | {"logprob": -0.1})
            clock = round(clock + 0.4, 3)
    return items


def _index(items: list[dict[str, Any]], text: str, speaker: str | None = None) -> int:
    return next(
        i
        for i, w in enumerate(items)
        if w["type"] == "word" and w["text"] == text and (speaker is None or w["speaker_id"] == speaker)
    )


def _placeholder(out: dict[str, Any]) -> tuple[str, float, float, str, str]:
    return out["text"], out["start"], out["end"], out["type"], out["speaker_id"]


def test_redact_words_one_run() -> None:
    words = make_words((AGENT, "je vous écoute"), (CLIENT, "alors c'est le 4970 1012 3456 7893 voilà"))
    before = copy.deepcopy(words)
    first, last = _index(words, "4970"), _index(words, "7893")
    out = redact_words(words)
    assert words == before, "the input is not modified"
    assert out[:first] == words[:first]
    assert _placeholder(out[first]) == ("[CARTE]", words[first]["start"], words[last]["end"], "word", CLIENT)
    assert out[first + 1 :] == words[last + 1 :], "the spacing inside the run is dropped, the rest is unchanged"


def test_redact_words_follows_one_speaker_through_an_interruption() -> None:
    words = make_words((CLIENT, "c'est 4970 1012"), (AGENT, "oui"), (CLIENT, "3456 7893 voilà"))
    out = redact_words(words)
    texts = [w["text"] for w in out if w["type"] == "word"]
    assert texts == ["c'est", "[CARTE]", "oui", "[CARTE]", "voilà"], texts
    placeholders = [w for w in out if w["text"] == "[CARTE]"]
    runs = [
        (words[_index(words, "4970")], words[_index(words, "1012")]),
        (words[_index(words, "3456")], words[_index(words, "7893")]),
    ]
    for placeholder, (first, last) in zip(placeholders, runs, strict=True):
        assert _placeholder(placeholder) == ("[CARTE]", first["start"], last["end"], "word", CLIENT)
    oui = words[_index(words, "oui")]
    assert oui in out, "the agent's word is kept as it was"
    assert len(out) == len(words) - 4, "only the spacing items inside the two runs are dropped"


def test_redact_words_code_read_after_the_agent_asks() -> None:
    words = make_words(
        (AGENT, "vous avez reçu un code par SMS, vous pouvez me le lire ?"),
        (CLIENT, "oui c'est 4 8 2 9 1 7."),
        (AGENT, "parfait merci"),
    )
    out = redact_words(words, STORAGE_KINDS)
    joined = "".join(w["text"] for w in out)
    assert "4 8 2 9 1 7" not in joined and "[CODE]" in joined, joined
    placeholder = next(w for w in out if "[CODE]" in w["text"])
    assert placeholder["speaker_id"] == CLIENT
    assert placeholder["start"] == words[_index(words, "4")]["start"]
    assert placeholder["end"] == words[_index(words, "7.")]["end"]


def test_redact_words_kinds() -> None:
    words = make_words((CLIENT, "ma carte 4970 1012 3456 7893 et mon portable 06 12 34 56 78 voilà"))
    stored = redact_words(words, STORAGE_KINDS)
    texts = [w["text"] for w in stored if w["type"] == "word"]
    assert texts == ["ma", "carte", "[CARTE]", "et", "mon", "portable", "06", "12", "34", "56", "78", "voilà"], texts
    texts = [w["text"] for w in redact_words(words) if w["type"] == "word"]
    assert texts == ["ma", "carte", "[CARTE]", "et", "mon", "portable", "[TÉLÉPHONE]", "voilà"], texts


def test_redact_words_without_personal_data() -> None:
    words = make_words((AGENT, "la cotisation est de 29,90 euros par mois,"), (CLIENT, "numéro ORIAS 07 012 345 ?"))
    assert redact_words(words) == words
    assert redact_words([]) == []


# --- The speech-to-text simulator's calls ---------------------------------------------------------------------------


def _simulated(call_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return truth_for(call_id), transcript_for(call_id)["words"]


def _joined(words: Iterable[dict[str, Any]]) -> str:
    return "".join(w["text"] for w in words)


def test_simulated_calls_keep_the_orias_number() -> None:
    checked, problems = 0, []
    for n in range(200):
        truth, words = _simulated(f"c-pii-{n}")
        orias = truth["orias"]
        before, after = _joined(words), _joined(redact_words(words))
        for form in (orias, orias.replace(" ", "")):
            if re.search(rf"(?<!\d){re.escape(form)}(?!\d)", before):
                checked += 1
                if form not in after:
                    start = before.index(form)
                    problems.append(f"c-pii-{n}: {form!r} redacted in {before[max(0, start - 80) : start + 40]!r}")
    assert checked >= 50, checked
    assert not problems, "\n".join(problems)


def _sms_code_words(truth: dict[str, Any], words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The six single digits the client reads in the contradicted ``no_phone_signature`` segment."""
    segment = next(s for s in truth["segments"] if s["key"] == "no_phone_signature")
    client = [
        w
        for w in words
        if w["type"] == "word"
        and w["speaker_id"] != truth["agent_speaker_id"]
        and segment["start"] <= w["start"] <= segment["end"]
    ]
    for i in range(len(client) - 5):
        run = client[i : i + 6]
        if all(re.fullmatch(r"\d[.,]?", w["text"]) for w in run):
            return run
    raise AssertionError(f"no SMS code read in {truth['call_id']}: {_joined(client)!r}")


def test_simulated_sms_codes_are_redacted_for_storage() -> None:
    calls = []
    for n in range(800):
        truth = truth_for(f"c-pii-{n}")
        if any(s["key"] == "no_phone_signature" and s["variant"] == "contradicted" for s in truth["segments"]):
            calls.append(f"c-pii-{n}")
    assert len(calls) >= 5, calls
    problems = []
    for call_id in calls:
        truth, words = _simulated(call_id)
        code = _sms_code_words(truth, words)
        digits = " ".join(w["text"][0] for w in code)
        out = redact_words(words, STORAGE_KINDS)
        left = [w for w in out if w["type"] == "word" and code[0]["start"] <= w["start"] <= code[-1]["end"]]
        if digits in _joined(out) or any(re.search(r"\d", w["text"]) for w in left):
            problems.append(f"{call_id}: {digits!r} still there: {_joined(left)!r}")
        elif not any("[CODE]" in w["text"] for w in left):
            problems.append(f"{call_id}: no [CODE] placeholder where {digits!r} was: {_joined(left)!r}")
    assert not problems, "\n".join(problems)
