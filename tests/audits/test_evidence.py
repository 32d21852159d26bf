"""The evidence gate (audits.evidence): rule by rule, on the labelled set, and its command."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audits.evidence import REASONS, EvidenceIndex, QuoteCheck, normalize, verify_quotes

DATA = Path(__file__).parent / "data"

TURNS: list[dict[str, Any]] = [
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 0.0,
        "end": 10.0,
        "text": "Bonjour Madame, euh, Camille Martin de Sérénis Courtage, courtier immatriculé à l’ORIAS "
        "sous le numéro 07 012 345.",
    },
    {"call_id": "c1", "speaker": "client", "start": 10.5, "end": 12.0, "text": "oui bonjour"},
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 12.5,
        "end": 30.5,
        "text": "alors je vous informe que l'appel est enregistré il est conservé deux ans après la signature "
        "et si vous refusez l'enregistrement on arrête l'appel",
    },
    {
        "call_id": "c1",
        "speaker": "client",
        "start": 31.0,
        "end": 35.0,
        "text": "non non ça me dérange pas hein vous pouvez enregistrer",
    },
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 35.5,
        "end": 45.5,
        "text": "pour vous deux c'est quatre-vingt-quatre euros cinquante par mois avec vingt pour cent de "
        "réduction la première année",
    },
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 46.0,
        "end": 56.0,
        "text": "vous disposez d'un délai de renonciation de quatorze jours calendaires la garantie "
        "assistance est obligatoire dans cette formule",
    },
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 57.0,
        "end": 67.0,
        "text": "je vous envoie les documents par e-mail vous ne signez rien par téléphone et il n'y a "
        "aucun frais de dossier",
    },
    {
        "call_id": "c1",
        "speaker": "client",
        "start": 68.0,
        "end": 74.0,
        "text": "d'accord je n'ai jamais eu de mutuelle sans délai de carence ni franchise",
    },
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 75.0,
        "end": 81.0,
        "text": "votre ancien contrat n'est plus valable après la résiliation c'est plus simple pour vous",
    },
    {
        "call_id": "c1",
        "speaker": "client",
        "start": 82.0,
        "end": 86.0,
        "text": "je paye pas de cotisation pour le moment",
    },
]


@pytest.fixture(scope="module")
def index() -> EvidenceIndex:
    return EvidenceIndex(TURNS)


def check(index: EvidenceIndex, quote: str, speaker: str | None = None) -> QuoteCheck:
    return index.check(quote, speaker=speaker)


# --------------------------------------------------------------------------- API shape


def test_reasons_and_frozen_result(index: EvidenceIndex) -> None:
    assert REASONS == ("not_found", "number_mismatch", "negation_mismatch", "too_short", "speaker_mismatch")
    result = check(index, "je vous informe que l'appel est enregistré")
    assert result.verified and result.reason is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verified = False  # type: ignore[misc]


def test_every_failure_reason_is_declared(index: EvidenceIndex) -> None:
    quotes = [
        "vous pouvez signer par téléphone avec un code maintenant",
        "il est conservé trois ans après la signature",
        "je vous envoie les documents par e-mail vous signez par téléphone",
        "oui bonjour",
        ("je vous informe que l'appel est enregistré", "client"),
    ]
    reasons = {r.reason for r in index.check_many(quotes)}
    assert reasons == set(REASONS)


# --------------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("ÉTÉ À L’ORIAS, déjà !", "ete a l'orias deja"),
        ("l’appel l'appel l‘appel", "l appel l appel l appel"),
        ("euh bah je heu vous ben hum appelle hein", "je vous appelle"),
        ("deux ans", "2 ans"),
        ("quatorze jours", "14 jours"),
        ("quatre-vingt-quatre euros cinquante", "84,50 €"),
        ("quatre vingt quatre euros et cinquante centimes", "84.50 euros"),
        ("84 € 50", "84,5 €"),
        ("vingt pour cent", "20 %"),
        ("07 012 345", "07012345"),
        ("zéro sept zéro douze trois cent quarante-cinq", "07012345"),
        ("zero sept zero un deux trois quatre cinq", "07 01 23 45"),
        ("au premier mars", "au 1er mars"),
        ("dans 24h", "dans vingt-quatre heures"),
        ("par e-mail", "par email"),
        ("locataire d'un trois pièces", "locataire d'un 3 pièces"),
    ],
)
def test_normalization_equivalences(a: str, b: str) -> None:
    assert normalize(a).string == normalize(b).string


def test_numbers_are_tokens_and_fillers_are_gone() -> None:
    n = normalize("Euh, c'est quatre-vingt-quatre euros cinquante par mois, hein, ORIAS n° 07 012 345")
    numbers = [t for t, is_num in zip(n.texts, n.nums, strict=True) if is_num]
    assert numbers == ["84.5", "07012345"]
    assert "euh" not in n.texts and "hein" not in n.texts
    assert normalize("deux").texts != normalize("trois").texts


@pytest.mark.parametrize(
    ("quote", "speaker"),
    [
        ("courtier immatriculé à l'ORIAS sous le numéro 07012345", "agent"),
        ("immatriculé à l'orias sous le numéro zéro sept zéro douze trois cent quarante-cinq", "agent"),
        ("Il est conservé 2 ans après la signature.", "agent"),
        ("Pour vous deux, c'est 84,50 € par mois", "agent"),
        ("avec 20 % de réduction la première année", "agent"),
        ("un délai de renonciation de 14 jours calendaires", "agent"),
        ("Non, non, ça me dérange pas : vous pouvez enregistrer.", "client"),
        ("Je vous envoie les documents par e-mail ; vous ne signez rien par téléphone.", "agent"),
    ],
)
def test_transcript_wording_variants_are_verified(index: EvidenceIndex, quote: str, speaker: str) -> None:
    result = check(index, quote, speaker)
    assert result.verified, result


# --------------------------------------------------------------------------- rules


def test_fabricated_quote_is_not_found(index: EvidenceIndex) -> None:
    result = check(index, "vous pouvez signer le contrat tout de suite par téléphone avec un code")
    assert (result.verified, result.reason) == (False, "not_found")
    assert result.matched_text is None and result.start is None
    assert result.score < 90


@pytest.mark.parametrize(
    "quote",
    [
        "il est conservé trois ans après la signature",  # deux -> trois
        "pour vous deux c'est 94,50 € par mois",
        "pour vous deux c'est 84 € par mois",  # the cents dropped: 84 != 84.5
        "avec trente pour cent de réduction la première année",
        "courtier immatriculé à l'ORIAS sous le numéro 07 012 354",
        "un délai de renonciation de trente jours calendaires",
    ],
)
def test_changed_number_is_a_number_mismatch(index: EvidenceIndex, quote: str) -> None:
    result = check(index, quote)
    assert (result.verified, result.reason) == (False, "number_mismatch")


def test_number_dropped_or_reordered_is_a_number_mismatch(index: EvidenceIndex) -> None:
    result = check(index, "vous disposez d'un délai de renonciation de jours calendaires la garantie assistance")
    assert result.reason == "number_mismatch"
    turns = [
        {
            "call_id": "c",
            "speaker": "client",
            "start": 0.0,
            "end": 3.0,
            "text": "j'ai deux enfants de 12 et 14 ans et je paye 45 euros",
        }
    ]
    index = EvidenceIndex(turns)
    assert check(index, "j'ai 2 enfants de douze et quatorze ans").verified
    assert check(index, "j'ai deux enfants de 14 et 12 ans").reason == "number_mismatch"
    assert check(index, "je paye 54 €").reason == "number_mismatch"


@pytest.mark.parametrize(
    "quote",
    [
        "je vous envoie les documents par e-mail vous signez par téléphone",  # ne ... rien dropped
        "non non ça me dérange vous pouvez enregistrer",  # "pas" alone dropped
        "vous ne signez rien par téléphone et il y a des frais de dossier",  # aucun dropped
        "d'accord j'ai eu de mutuelle sans délai de carence ni franchise",  # jamais dropped
        "je n'ai jamais eu de mutuelle avec délai de carence ni franchise",  # sans dropped
        "votre ancien contrat est plus valable après la résiliation",  # n'est plus -> est plus
        "je paye de cotisation pour le moment",  # pas dropped
        "je ne vous informe pas que l'appel est enregistré",  # ne ... pas added
        "il n'est jamais conservé deux ans après la signature",  # jamais added
    ],
)
def test_flipped_negation_is_a_negation_mismatch(index: EvidenceIndex, quote: str) -> None:
    result = check(index, quote)
    assert (result.verified, result.reason) == (False, "negation_mismatch")


def test_a_quote_may_not_stop_just_before_its_negation() -> None:
    turns = [
        {
            "call_id": "c",
            "speaker": "client",
            "start": 0.0,
            "end": 5.0,
            "text": "bon votre offre de mutuelle senior ça m'intéresse pas",
        },
        {
            "call_id": "c",
            "speaker": "client",
            "start": 6.0,
            "end": 9.0,
            "text": "oui je suis d'accord pour recevoir le devis. Pas de souci pour moi",
        },
    ]
    index = EvidenceIndex(turns)
    truncated = check(index, "votre offre de mutuelle senior ça m'intéresse")
    assert (truncated.verified, truncated.reason) == (False, "negation_mismatch")
    assert check(index, "votre offre de mutuelle senior ça m'intéresse pas").verified
    assert check(index, "je suis d'accord pour recevoir le devis").verified  # "pas de souci" starts a new clause


def test_negations_spoken_or_written_are_the_same(index: EvidenceIndex) -> None:
    # the client dropped "ne" ("je paye pas"); the quote may restore it
    assert check(index, "je ne paye pas de cotisation pour le moment", "client").verified
    # "c'est plus simple" is a comparison, not a negation
    assert check(index, "après la résiliation c'est plus simple pour vous", "agent").verified


def test_one_swapped_word_rejects_the_quote(index: EvidenceIndex) -> None:
    result = check(index, "la garantie assistance est facultative dans cette formule")
    assert (result.verified, result.reason) == (False, "not_found")
    assert check(index, "la garantie assistance est obligatoire dans cette formule").verified


def test_speech_to_text_spelling_slips_are_tolerated_on_long_words_only() -> None:
    turns = [
        {
            "call_id": "c",
            "speaker": "agent",
            "start": 0.0,
            "end": 5.0,
            "text": "la complémentère santé rembourse la monture des lunette et les lentilles de mon fils",
        }
    ]
    index = EvidenceIndex(turns)
    assert check(index, "la complémentaire santé rembourse la monture").verified  # 2 edits, 14 letters
    assert check(index, "santé rembourse la monture des lunettes").verified  # 1 edit, 8 letters
    assert check(index, "la complémentaire santé rembourse la voiture").reason == "not_found"  # 2 edits, 7 letters
    assert check(index, "des lunettes et les lentilles de mon fil").reason == "not_found"  # 1 edit, 3 letters


def test_short_quotes_prove_nothing_unless_they_carry_a_number(index: EvidenceIndex) -> None:
    for quote in ("oui bonjour", "Euh, vous pouvez enregistrer", "d'accord", "", "l'appel est enregistré"):
        result = check(index, quote)
        assert (result.verified, result.reason, result.score) == (False, "too_short", 0.0), quote
    assert check(index, "quatorze jours calendaires").verified
    assert check(index, "84,50 €").verified
    assert check(index, "il est conservé deux ans").verified  # exactly 4 words


def test_speaker_is_checked_when_named(index: EvidenceIndex) -> None:
    quote = "je vous informe que l'appel est enregistré"
    assert check(index, quote, "agent").verified
    assert check(index, quote, None).verified
    wrong = check(index, quote, "client")
    assert (wrong.verified, wrong.reason, wrong.speaker) == (False, "speaker_mismatch", "agent")
    assert check(index, "ça me dérange pas vous pouvez enregistrer", "Client").verified  # case-insensitive
    assert check(index, "ça me dérange pas vous pouvez enregistrer", "agent").reason == "speaker_mismatch"


def test_a_quote_never_spans_two_turns(index: EvidenceIndex) -> None:
    first = "vous disposez d'un délai de renonciation de quatorze jours"
    second = "je vous envoie les documents par e-mail"
    assert check(index, first).verified and check(index, second).verified
    stitched = check(index, "la garantie assistance est obligatoire dans cette formule je vous envoie les documents")
    assert (stitched.verified, stitched.reason) == (False, "not_found")
    across_speakers = check(index, "on arrête l'appel non non ça me dérange pas")
    assert (across_speakers.verified, across_speakers.reason) == (False, "not_found")


def test_a_long_quote_does_not_match_a_short_turn_it_contains() -> None:
    turns = [{"call_id": "c", "speaker": "client", "start": 0.0, "end": 1.0, "text": "oui d'accord"}]
    result = check(EvidenceIndex(turns), "oui d'accord je signe le contrat par téléphone tout de suite")
    assert (result.verified, result.reason) == (False, "not_found")


def test_matched_text_is_the_transcripts_words_with_times_inside_the_turn(index: EvidenceIndex) -> None:
    result = check(index, "Bonjour madame, Camille Martin de Sérénis Courtage")
    turn = TURNS[0]
    expected = "Bonjour Madame, euh, Camille Martin de Sérénis Courtage"
    assert result.verified
    assert result.matched_text == expected
    assert (result.speaker, result.call_id) == ("agent", "c1")
    assert result.start == pytest.approx(0.0)
    assert result.end == pytest.approx(10.0 * len(expected) / len(turn["text"]), abs=1e-3)

    result = check(index, "pour vous deux c'est 84,50 € par mois")
    turn = TURNS[4]
    assert result.matched_text == "pour vous deux c'est quatre-vingt-quatre euros cinquante par mois"
    start_char = turn["text"].index(result.matched_text)
    assert start_char == 0
    assert result.start == pytest.approx(35.5)
    assert 35.5 < result.end < 45.5
    assert result.end == pytest.approx(35.5 + 10.0 * len(result.matched_text) / len(turn["text"]), abs=1e-3)

    middle = check(index, "il est conservé 2 ans après la signature")
    turn = TURNS[2]
    offset = turn["text"].index("il est conservé")
    assert middle.matched_text == "il est conservé deux ans après la signature"
    assert middle.start == pytest.approx(12.5 + 18.0 * offset / len(turn["text"]), abs=1e-3)
    assert turn["start"] < middle.start < middle.end < turn["end"]


def test_rejections_still_locate_the_span_for_reviewers(index: EvidenceIndex) -> None:
    result = check(index, "il est conservé trois ans après la signature")
    assert result.reason == "number_mismatch"
    assert result.matched_text == "il est conservé deux ans après la signature"
    assert result.score >= 90


def test_threshold_is_the_callers(index: EvidenceIndex) -> None:
    quote = "je vous informe que lappel est enregistrer"  # two small slips
    assert EvidenceIndex(TURNS, threshold=90).check(quote).verified
    strict = EvidenceIndex(TURNS, threshold=100).check(quote)
    assert (strict.verified, strict.reason) == (False, "not_found")


def test_check_many_and_verify_quotes_accept_strings_pairs_and_dicts() -> None:
    quotes = [
        "je vous informe que l'appel est enregistré",
        ("oui bonjour", "client"),
        {"quote": "ça me dérange pas vous pouvez enregistrer", "speaker": "agent"},
    ]
    results = verify_quotes(TURNS, quotes, threshold=90.0)
    assert [(r.verified, r.reason) for r in results] == [
        (True, None),
        (False, "too_short"),
        (False, "speaker_mismatch"),
    ]
    assert [r.quote for r in results] == [quotes[0], "oui bonjour", quotes[2]["quote"]]


# --------------------------------------------------------------------------- labelled set


def _labelled() -> list[dict[str, Any]]:
    return json.loads((DATA / "quotes.json").read_text(encoding="utf-8"))


def test_labelled_set_is_large_and_varied() -> None:
    items = _labelled()
    kinds = Counter(item["kind"] for item in items)
    assert len(items) >= 120
    assert sum(item["label"] for item in items) >= 50
    assert sum(not item["label"] for item in items) >= 70
    false_kinds = {
        "fabricated",
        "paraphrased",
        "number_altered",
        "negation_flipped",
        "speaker_swapped",
        "too_short",
        "word_swapped",
        "stitched",
    }
    assert false_kinds <= set(kinds) and all(kinds[k] >= 5 for k in false_kinds)
    for item in items:
        assert item["label"] == (item["kind"] in {"exact", "case_accent_punct", "filler", "number_words"})
        assert item["speaker"] in ("agent", "client", None)
        assert (DATA / f"{item['transcript']}.json").exists()


def test_labelled_set_all_false_rejected_and_true_accepted() -> None:
    indexes: dict[str, EvidenceIndex] = {}
    wrong: list[str] = []
    accepted = true_total = 0
    for item in _labelled():
        name = item["transcript"]
        if name not in indexes:
            indexes[name] = EvidenceIndex(json.loads((DATA / f"{name}.json").read_text(encoding="utf-8")))
        result = indexes[name].check(item["quote"], speaker=item["speaker"])
        if item["label"]:
            true_total += 1
            accepted += result.verified
        elif result.verified:
            wrong.append(f"{item['kind']}: {item['quote']!r} matched {result.matched_text!r}")
    assert wrong == [], "false quotes accepted"
    assert accepted >= 0.95 * true_total, f"only {accepted}/{true_total} true quotes accepted"


# --------------------------------------------------------------------------- command


def _write(tmp_path: Path, name: str, payload: Any) -> str:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _run(*args: str) -> list[dict[str, Any]]:
    out = StringIO()
    call_command("verify_quotes", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_command_prints_one_json_line_per_quote(tmp_path: Path) -> None:
    turns = [
        {"speaker": "agent", "start": 0.0, "text": "je vous informe que l'appel est enregistré"},
        {"speaker": "client", "start": 4.0, "text": "d'accord vous pouvez enregistrer la conversation"},
    ]
    transcript = _write(tmp_path, "t.json", turns)
    quotes = _write(
        tmp_path,
        "q.json",
        [
            "Je vous informe que l'appel est enregistré.",
            {"quote": "vous pouvez enregistrer la conversation", "speaker": "agent"},
            {"quote": "je vous informe que l'appel n'est pas enregistré"},
        ],
    )
    lines = _run("--transcript", transcript, "--quotes", quotes)
    assert [set(line) for line in lines] == [
        {"quote", "verified", "reason", "score", "speaker", "start", "end", "matched_text"}
    ] * 3
    first, second, third = lines
    assert (first["verified"], first["reason"], first["speaker"]) == (True, None, "agent")
    assert first["matched_text"] == "je vous informe que l'appel est enregistré"
    assert (first["start"], first["end"]) == (0.0, 4.0)  # missing end = next turn's start
    assert (second["verified"], second["reason"], second["speaker"]) == (False, "speaker_mismatch", "client")
    assert 4.0 < second["start"] < second["end"]
    assert third["verified"] is False and third["reason"] == "negation_mismatch"


def test_command_threshold_option(tmp_path: Path) -> None:
    transcript = _write(
        tmp_path,
        "t.json",
        [{"speaker": "agent", "start": 0, "end": 3, "text": "je vous informe que l'appel est enregistré"}],
    )
    quotes = _write(tmp_path, "q.json", ["je vous informe que lappel est enregistrer"])
    assert _run("--transcript", transcript, "--quotes", quotes)[0]["verified"] is True
    assert _run("--transcript", transcript, "--quotes", quotes, "--threshold", "100")[0]["verified"] is False


GOOD_TURNS = [{"speaker": "agent", "start": 0, "text": "bonjour"}]


@pytest.mark.parametrize(
    ("transcript", "quotes", "bad", "message"),
    [
        (None, ["x"], "t", "file not found"),
        ('[{"speaker": "agent", ', ["x"], "t", "malformed JSON"),
        ({"speaker": "agent"}, ["x"], "t", "expected a JSON list of turns"),
        ([{"speaker": "agent", "text": "bonjour"}], ["x"], "t", "turn 0: 'start' must be a number"),
        ([{"start": 0, "text": "bonjour"}], ["x"], "t", "turn 0: 'speaker'"),
        ([{"speaker": "agent", "start": 0}], ["x"], "t", "turn 0: 'text' must be a string"),
        (GOOD_TURNS, "not json", "q", "malformed JSON"),
        (GOOD_TURNS, {"quote": "x"}, "q", "expected a JSON list of quotes"),
        (GOOD_TURNS, [{"speaker": "agent"}], "q", "quote 0"),
    ],
)
def test_command_rejects_bad_files(tmp_path: Path, transcript: Any, quotes: Any, bad: str, message: str) -> None:
    t_path = str(tmp_path / "missing.json") if transcript is None else _write(tmp_path, "t.json", transcript)
    q_path = _write(tmp_path, "q.json", quotes)
    with pytest.raises(CommandError) as excinfo:
        call_command("verify_quotes", "--transcript", t_path, "--quotes", q_path, stdout=StringIO())
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith(t_path if bad == "t" else q_path)


def test_command_missing_quotes_file_is_named(tmp_path: Path) -> None:
    t_path = _write(tmp_path, "t.json", GOOD_TURNS)
    missing = str(tmp_path / "nowhere" / "q.json")
    with pytest.raises(CommandError, match="file not found") as excinfo:
        call_command("verify_quotes", "--transcript", t_path, "--quotes", missing, stdout=StringIO())
    assert missing in str(excinfo.value)
