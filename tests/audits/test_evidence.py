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

from audits.evidence import _ANTONYM_TABLE, REASONS, EvidenceIndex, QuoteCheck, normalize, verify_quotes

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
    assert REASONS == (
        "not_found",
        "number_mismatch",
        "negation_mismatch",
        "antonym_mismatch",
        "too_short",
        "speaker_mismatch",
    )
    result = check(index, "je vous informe que l'appel est enregistré")
    assert result.verified and result.reason is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verified = False  # type: ignore[misc]


def test_every_failure_reason_is_declared(index: EvidenceIndex) -> None:
    quotes = [
        "vous pouvez signer par téléphone avec un code maintenant",
        "il est conservé trois ans après la signature",
        "je vous envoie les documents par e-mail vous signez par téléphone",
        "la garantie assistance est facultative dans cette formule",
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
    result = check(index, "la garantie assistance est offerte dans cette formule")
    assert (result.verified, result.reason) == (False, "not_found")
    assert check(index, "la garantie assistance est obligatoire dans cette formule").verified


def _one_turn(text: str) -> EvidenceIndex:
    return EvidenceIndex([{"call_id": "c", "speaker": "agent", "start": 0.0, "end": 5.0, "text": text}])


# (sentence with "{}", word, its opposite, reason): each way round, in the middle of the quote and as its last word
OPPOSITES = [
    # negative prefixes
    ("la résiliation de votre ancien contrat est {} à tout moment", "possible", "impossible", "antonym_mismatch"),
    ("le démarchage téléphonique est {} dans votre cas", "légal", "illégal", "antonym_mismatch"),
    ("c'est un contrat {} au sens de la loi", "responsable", "irresponsable", "antonym_mismatch"),
    ("le tarif proposé est {} pour votre famille", "favorable", "défavorable", "antonym_mismatch"),
    ("je suis vraiment {} de mon conseiller actuel", "content", "mécontent", "antonym_mismatch"),
    ("ce courtier m'est {} depuis longtemps", "connu", "inconnu", "antonym_mismatch"),
    ("je suis tout à fait {} par votre offre de mutuelle", "intéressé", "désintéressé", "antonym_mismatch"),
    ("le prélèvement automatique est {} sur votre compte", "activé", "désactivé", "antonym_mismatch"),
    # "non" before an adjective is a negation
    ("les frais de dossier sont {} au bout de trente jours", "remboursables", "non remboursables", "negation_mismatch"),
    ("le forfait optique est {} dans la formule", "inclus", "non inclus", "negation_mismatch"),
    ("le capital versé est {} par contrat", "garanti", "non garanti", "negation_mismatch"),
    # the lexical table
    ("la garantie assistance est {} dans cette formule", "obligatoire", "facultative", "antonym_mismatch"),
    ("l'option dépannage est {} du contrat", "incluse", "exclue", "antonym_mismatch"),
    ("la résiliation de votre ancien contrat est {} pour vous", "gratuite", "payante", "antonym_mismatch"),
    ("je vous rappelle {} la signature du contrat", "avant", "après", "antonym_mismatch"),
    ("et si vous {} l'enregistrement on arrête l'appel", "refusez", "acceptez", "antonym_mismatch"),
    ("votre demande de devis a été {} par le service", "acceptée", "refusée", "antonym_mismatch"),
    ("les frais de dossier sont {} dès la signature", "remboursés", "à votre charge", "antonym_mismatch"),
    ("les lunettes de votre fils sont {} chaque année", "prises en charge", "à votre charge", "antonym_mismatch"),
    ("la signature électronique est {} par téléphone", "autorisée", "interdite", "antonym_mismatch"),
    ("la résiliation en ligne est {} dans votre cas", "possible", "interdite", "antonym_mismatch"),
    ("ce serait vraiment {} cher que votre contrat actuel", "plus", "moins", "antonym_mismatch"),
    ("le remboursement est plafonné à un {} de trois cents euros", "maximum", "minimum", "antonym_mismatch"),
    ("la cotisation va {} l'année prochaine", "augmenter", "baisser", "antonym_mismatch"),
    ("il y aura une {} de la cotisation en janvier", "augmentation", "baisse", "antonym_mismatch"),
    ("votre espace client est {} depuis ce matin", "ouvert", "fermé", "antonym_mismatch"),
    ("la garantie prend effet au {} du contrat", "début", "fin", "antonym_mismatch"),
    ("votre carte de tiers payant est {} jusqu'en décembre", "valable", "expirée", "antonym_mismatch"),
    ("le tarif est {} pendant toute la durée du contrat", "fixe", "variable", "antonym_mismatch"),
]


@pytest.mark.parametrize(("sentence", "word", "opposite", "reason"), OPPOSITES)
def test_a_word_turned_into_its_opposite_is_rejected_both_ways(
    sentence: str, word: str, opposite: str, reason: str
) -> None:
    for said, quoted in ((word, opposite), (opposite, word)):
        index = _one_turn(sentence.format(said))
        assert check(index, sentence.format(said)).verified
        result = check(index, sentence.format(quoted))
        assert (result.verified, result.reason) == (False, reason), (said, quoted)
        assert result.score >= 90  # located for the reviewer, not "not_found"
        ending = sentence.split("{}")[0] + quoted  # the flipped word closes the quote
        result = check(index, ending)
        assert (result.verified, result.reason) == (False, reason), (said, ending)


def test_a_negative_prefix_flips_a_word_whatever_its_plural_or_feminine_ending() -> None:
    index = _one_turn("ces garanties sont possibles à tout moment de l'année")
    assert check(index, "ces garanties sont impossible à tout moment").reason == "antonym_mismatch"
    index = _one_turn("cette garantie est inconnue de nos services")
    assert check(index, "cette garantie est connu de nos services").reason == "antonym_mismatch"
    assert check(index, "cette garantie est inconnu de nos services").verified  # a slip, not a flip


def test_oui_non_and_avec_sans_are_negations_inside_the_span_and_antonyms_just_outside() -> None:
    index = _one_turn("la garantie décès est sans franchise dans votre formule")
    assert check(index, "la garantie décès est avec franchise dans votre formule").reason == "negation_mismatch"
    assert check(index, "la garantie décès est avec").reason == "antonym_mismatch"  # "sans" just after the span
    index = _one_turn("la garantie décès est avec franchise dans votre formule")
    assert check(index, "la garantie décès est sans franchise dans votre formule").reason == "negation_mismatch"
    index = _one_turn("non je suis d'accord pour recevoir le devis par courrier")
    assert check(index, "oui je suis d'accord pour recevoir le devis").reason == "antonym_mismatch"
    assert check(index, "je suis d'accord pour recevoir le devis").verified
    index = _one_turn("oui je suis d'accord pour recevoir le devis par courrier")
    assert check(index, "non je suis d'accord pour recevoir le devis").reason == "negation_mismatch"


@pytest.mark.parametrize(("side_a", "side_b"), _ANTONYM_TABLE)
def test_every_line_of_the_antonym_table_is_enforced(side_a: str, side_b: str) -> None:
    a, b = side_a.split(",")[0].strip(), side_b.split(",")[-1].strip()
    sentence = "je vous confirme que c'est {} pour vous dans ce contrat"
    for said, quoted in ((a, b), (b, a)):
        index = _one_turn(sentence.format(said))
        assert check(index, sentence.format(said)).verified
        assert check(index, sentence.format(quoted)).reason in ("antonym_mismatch", "negation_mismatch")


CONTROL_TURNS = [
    "c'est important de vous indiquer que je vous dérange pour une demande d'information",
    "je vais vous illustrer ça immédiatement vous êtes déjà inscrit chez nous",
    "oui je suis intéressé par une offre moins chère",
    "l'appel est enregistré et la renonciation se fait par lettre recommandée avant toute signature",
    "la garantie assistance c'est obligatoire et le tiers payant est gratuit sans frais de dossier",
    "vous pouvez signer avant ou après la visite du conseiller comme vous préférez",
    "c'est un contrat responsable et les dépassements d'honoraires sont à votre charge au-delà du plafond",
    "le devis est valable un mois et vous pouvez le refuser sans rien payer",
    "non désolé je ne suis pas disponible maintenant",
    "les frais sont non remboursables après trente jours",
    "la résiliation est impossible avant la fin de la première année",
]


@pytest.fixture(scope="module")
def controls() -> EvidenceIndex:
    return EvidenceIndex(
        [
            {"call_id": "c", "speaker": "agent", "start": 10.0 * i, "end": 10.0 * i + 9, "text": text}
            for i, text in enumerate(CONTROL_TURNS)
        ]
    )


@pytest.mark.parametrize(
    "quote",
    [
        # words that merely start like a negative prefix, as said or with a speech-to-text slip
        "c'est important de vous indiquer que je vous dérange",
        "c'est importante de vous indiquer que je vous dérange",
        "je vous dérange pour une demande d'informations",
        "je vais vous illustrer ça immédiatement",
        "vous êtes déjà inscrit chez nous",
        "oui je suis intéressé par une offre moins chère",
        "je suis intéressée par une offre moins chère",
        "l'appel est enregistrée et les renonciations se fait par lettre recommandée",
        # one side of a pair, said as it was
        "la renonciation se fait par lettre recommandée avant toute signature",
        "la garantie assistance c'est obligatoire",
        "le tiers payant est gratuit sans frais de dossier",  # both sides of gratuit/payant, as said
        "vous pouvez signer avant ou après la visite du conseiller",
        "après la visite du conseiller comme vous préférez",  # "avant" is next to the span, "après" in it
        "c'est un contrat responsable et les dépassements d'honoraires sont à votre charge",
        "le devis est valable un mois et vous pouvez le refuser sans rien payer",
        "désolé je ne suis pas disponible maintenant",  # "non" there answers, it prefixes nothing
        "la résiliation est impossible avant la fin de la première année",
    ],
)
def test_true_quotes_with_prefix_like_words_or_one_side_of_a_pair_are_verified(
    controls: EvidenceIndex, quote: str
) -> None:
    result = check(controls, quote)
    assert result.verified, result


@pytest.mark.parametrize(
    ("quote", "reason"),
    [
        ("les frais sont remboursables après trente jours", "negation_mismatch"),
        ("remboursables après trente jours", "negation_mismatch"),  # may not start just after "non"
        ("c'est un contrat irresponsable et les dépassements d'honoraires sont à votre charge", "antonym_mismatch"),
        ("les dépassements d'honoraires sont remboursés au-delà du plafond", "antonym_mismatch"),
        ("le tiers payant est payant sans frais de dossier", "antonym_mismatch"),  # a multiset, as for negations
        ("la résiliation est possible avant la fin de la première année", "antonym_mismatch"),
        ("la résiliation est impossible après la fin de la première année", "antonym_mismatch"),
        ("je suis désintéressé par une offre moins chère", "antonym_mismatch"),
        ("le devis est valable un mois et vous pouvez l'accepter sans rien payer", "antonym_mismatch"),
        ("vous pouvez signer avant ou après la visite du médecin", "not_found"),  # not a flip: another word
    ],
)
def test_flipped_words_next_to_true_ones_are_rejected(controls: EvidenceIndex, quote: str, reason: str) -> None:
    result = check(controls, quote)
    assert (result.verified, result.reason) == (False, reason), result


def test_a_quote_not_in_the_call_stays_not_found_whatever_its_antonyms(index: EvidenceIndex) -> None:
    for quote in (
        "la résiliation est gratuite et possible à tout moment sans frais",
        "vous pouvez refuser le contrat avant la fin du mois",
    ):
        result = check(index, quote)
        assert (result.verified, result.reason) == (False, "not_found"), result
    stitched = check(index, "la garantie assistance est facultative dans cette formule je vous envoie les documents")
    assert (stitched.verified, stitched.reason) == (False, "not_found")


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
    assert len(items) >= 200
    assert sum(item["label"] for item in items) >= 95
    assert sum(not item["label"] for item in items) >= 105
    false_kinds = {
        "fabricated",
        "paraphrased",
        "number_altered",
        "negation_flipped",
        "speaker_swapped",
        "too_short",
        "word_swapped",
        "stitched",
        "antonym",
    }
    assert false_kinds <= set(kinds) and all(kinds[k] >= 5 for k in false_kinds)
    assert kinds["antonym"] >= 25
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


def test_command_reports_a_flipped_antonym(tmp_path: Path) -> None:
    transcript = _write(
        tmp_path,
        "t.json",
        [
            {"speaker": "agent", "start": 0, "text": "la garantie assistance est obligatoire dans cette formule"},
            {"speaker": "agent", "start": 7, "text": "la résiliation de votre contrat est possible à tout moment"},
        ],
    )
    quotes = _write(
        tmp_path,
        "q.json",
        [
            "la garantie assistance est facultative dans cette formule",
            {"quote": "la résiliation de votre contrat est impossible à tout moment", "speaker": "agent"},
            "la résiliation de votre contrat est possible à tout moment",
        ],
    )
    lexical, prefixed, true = _run("--transcript", transcript, "--quotes", quotes)
    assert (lexical["verified"], lexical["reason"]) == (False, "antonym_mismatch")
    assert lexical["matched_text"].startswith("la garantie assistance est")  # located for the reviewer
    assert (prefixed["verified"], prefixed["reason"], prefixed["speaker"]) == (False, "antonym_mismatch", "agent")
    assert (true["verified"], true["reason"]) == (True, None)


def test_every_reason_is_a_choice_of_the_api() -> None:
    from audits.api.serializers import RejectedCitationOutput

    assert set(REASONS) == set(RejectedCitationOutput().fields["reason"].choices)


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
