"""The LLM simulator's deterministic lexical judge (what answers a Chat Completions request).

Input is the request body; nothing else (no state between requests, no randomness: the knobs that make the
simulator misbehave are applied by ``audits.simulator.server`` with the helpers at the end of this module).

**Audit steps** (the prompt has a ``## Points de contrôle`` section, format of ``audits.prompts``): for each
control point the judge looks for the transcript passage whose content words (accents, case, stop words and
meta words such as "agent" or "indique" ignored; number words as digits; light stemming) best overlap the
point's question and evidence hint, evidence-hint words counting double. The passage is a sentence or two
adjacent sentences of one turn; the quote is that exact text (at least ``MIN_QUOTE_WORDS`` words), with the
turn's speaker.

- ``pass`` when the best passage's overlap reaches ``PASS_THRESHOLD`` (and ``MIN_MATCHED_TERMS`` terms) and it
  does not contradict the point. A word is negated when a marker (``ne``/``n'``, ``pas``, ``aucun``,
  ``jamais``, ``rien``…) stands near it in its clause; the passage contradicts the point when most of the
  point's affirmative matched words are negated in it ("vous n'avez pas de délai de rétractation", "aucun
  droit"), or most of the point's negated words are affirmative in it (point "aucune signature n'est demandée
  par téléphone", passage "je vous demande une signature par téléphone"). A contradiction ``fail``s the point,
  quoting the passage;
- ``fail`` otherwise, quoting the closest passage when it is at least half-way to the threshold;
- ``not_applicable`` when the point is marked conditional, its question reads ``Si <condition>, …`` and no
  turn holds the condition's words.

Only the turns of the point's speaker (``Preuve : paroles de l'agent`` / ``du client``; either for ``any``)
are searched for evidence, as an honest model would.

**Tools mode** (the request has ``tools`` and no ``## Transcription``): first one ``searchTranscript`` call per
point (query: the hint, plus the condition of a conditional point; ``max_results`` 2), then
``getTranscriptChunks`` for the best chunk of each point (at most ``MAX_CHUNKS_PER_CALL`` ids per call), then
the answer judged over the turns of the returned chunks. With ``tool_choice: "none"`` it answers from what it
has (chunks, else search snippets).

**Chat** (no points section): answers the last user message in French, quoting the most relevant lines of the
other messages in « guillemets ».
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from text_to_num import alpha2digit

from audits.prompts import (
    FICHE_MARKER,
    TIMELINE_CALL_HEADER,
    TIMELINE_TURN_LINE,
    TRANSCRIPT_MARKER,
    ControlPointSpec,
    parse_control_points,
    section,
)
from audits.transcript_tools import (
    CHUNKS_TOOL,
    FRENCH_STOP_WORDS,
    MAX_CHUNKS_PER_CALL,
    SEARCH_TOOL,
    fold,
    stem,
)

NAME_TERM = "nom"  # a point asking for the agent's name ("son nom") is met by the name itself
PASS_THRESHOLD = 0.34
MIN_MATCHED_TERMS = 2
MIN_QUOTE_WORDS = 4
MAX_QUOTES = 2
SEARCH_RESULTS_PER_POINT = 2
NEGATION_BEFORE_WORDS = 6
NEGATION_AFTER_WORDS = 4
HINT_WEIGHT = 2.0

_META_TEXT = (
    "agent agents client cliente clients conseiller conseillère vendeur annonce annoncé annoncer indique indiqué "
    "indiquer précise précisé préciser mentionne mentionné mentionner informe informé informer explique expliqué "
    "expliquer cite rappelle rappelé rappeler demande demandé demander vérifie bien clairement correctement "
    "question point contrôle appelant interlocuteur personne prospect dit dire"
)
_NEGATION_BEFORE = frozenset({"ne", "pas", "jamais", "aucun", "aucune", "rien", "nul", "nulle", "non", "ni"})
_NEGATION_AFTER = frozenset({"ne", "pas", "jamais", "aucun", "aucune", "rien"})
_CLAUSE_SPLIT = re.compile(r"[,;:.!?…()«»\"—–]+|\s-\s")
_SENTENCE = re.compile(r"[^.!?…]+(?:[.!?…]+|$)")
_RAW_WORD = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+")
_CONDITION = re.compile(r"^\s*si\s+(?P<condition>[^,?:;]+)[,:;]\s*(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_ELIDED = re.compile(r"\b(?:[cdjlmst]|qu|jusqu|lorsqu|puisqu)'", re.IGNORECASE)


def _raw_words(text: str) -> list[str]:
    """Folded words with numbers as digits; ``n'`` kept as ``ne`` (a negation marker), other elisions dropped."""
    with contextlib.suppress(ValueError, RuntimeError):
        text = alpha2digit(text, "fr")
    folded = fold(text)
    folded = re.sub(r"\bn'", "ne ", folded)
    return _RAW_WORD.findall(_ELIDED.sub(" ", folded))


def _content_stem(word: str) -> str | None:
    if word in FRENCH_STOP_WORDS or word in _NEGATION_BEFORE or (len(word) < 2 and not word.isdigit()):
        return None
    return stem(word)


_META = frozenset(filter(None, (_content_stem(word) for word in _raw_words(_META_TEXT))))


def terms_of(text: str) -> list[str]:
    """Content stems of ``text`` without meta words, in order, once each."""
    stems = (_content_stem(word) for word in _raw_words(text))
    return list(dict.fromkeys(term for term in stems if term and term not in _META))


# --- Transcript ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Turn:
    call_id: str
    clock: str  # "mm:ss" as written
    speaker: Literal["agent", "client"]
    text: str


def parse_turns(text: str) -> list[Turn]:
    """The speaker turns of timeline-formatted text (``### Appel <id>`` headers, ``[mm:ss] Agent: …`` lines)."""
    turns: list[Turn] = []
    call_id = ""
    for line in text.splitlines():
        line = line.strip()
        header = TIMELINE_CALL_HEADER.match(line)
        if header:
            call_id = header["call_id"]
            continue
        match = TIMELINE_TURN_LINE.match(line)
        if match and match["text"].strip():
            speaker: Literal["agent", "client"] = "agent" if match["speaker"] == "Agent" else "client"
            turns.append(Turn(call_id, f"{match['minutes']}:{match['seconds']}", speaker, match["text"].strip()))
    return turns


def _dedupe(turns: Iterable[Turn]) -> list[Turn]:
    return list(dict.fromkeys(turns))


# --- Judging ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Query:
    point: ControlPointSpec
    condition: str | None
    weights: dict[str, float]
    negated: dict[str, bool]  # polarity of each term in the point's own wording
    names: frozenset[str] = frozenset()  # the agent's name words, from the prompt's fiche section

    @property
    def total(self) -> float:
        return sum(self.weights.values())


@dataclasses.dataclass(frozen=True)
class _Passage:
    turn: Turn
    text: str
    score: float
    matched: tuple[str, ...]
    contradicts: bool  # most of the point's negated, or of its affirmative, matched words have flipped polarity


def _split_condition(question: str) -> tuple[str | None, str]:
    match = _CONDITION.match(question)
    if match is None:
        return None, question
    return match["condition"].strip(), match["rest"].strip()


def _query(point: ControlPointSpec, names: frozenset[str] = frozenset()) -> _Query:
    condition, rest = _split_condition(point.question)
    weights: dict[str, float] = {term: 1.0 for term in terms_of(rest)}
    for term in terms_of(point.evidence_hint):
        weights[term] = HINT_WEIGHT
    negated = _polarity(_analyse(f"{rest}. {point.evidence_hint}"), set(weights))
    return _Query(point, condition, weights, negated, names if NAME_TERM in weights else frozenset())


def agent_names(text: str) -> frozenset[str]:
    """The words of the agent's name in a prompt's fiche section (``Agent : Prénom Nom``)."""
    fiche = section(text, FICHE_MARKER) or ""
    found = re.search(r"^\s*Agent\s*:\s*(?P<name>.+)$", fiche, re.MULTILINE | re.IGNORECASE)
    if found is None:
        return frozenset()
    return frozenset(word for word in fold(found["name"]).split() if len(word) >= 3 and word != "inconnu")


def _analyse(text: str) -> list[list[tuple[str, str | None]]]:
    """Clauses of ``text``, each a list of (raw word, content stem or None)."""
    clauses = []
    for clause in _CLAUSE_SPLIT.split(text):
        words = _raw_words(clause)
        if words:
            clauses.append([(word, _content_stem(word)) for word in words])
    return clauses


def _polarity(clauses: list[list[tuple[str, str | None]]], terms: set[str]) -> dict[str, bool]:
    """For each of ``terms`` found in ``clauses``: whether most of its occurrences sit next to a negation marker
    in their clause (within ``NEGATION_BEFORE_WORDS`` words before or ``NEGATION_AFTER_WORDS`` after); ties
    count as negated."""
    votes: dict[str, list[int]] = {}
    for clause in clauses:
        for position, (_, term) in enumerate(clause):
            if term is None or term not in terms:
                continue
            before = {word for word, _ in clause[max(0, position - NEGATION_BEFORE_WORDS) : position]}
            after = {word for word, _ in clause[position + 1 : position + 1 + NEGATION_AFTER_WORDS]}
            negated = bool(before & _NEGATION_BEFORE or after & _NEGATION_AFTER)
            votes.setdefault(term, [0, 0])[0 if negated else 1] += 1
    return {term: negated >= positive for term, (negated, positive) in votes.items()}


def _windows(turn: Turn) -> list[str]:
    """Candidate quotes of a turn: each sentence and each pair of adjacent sentences, exact substrings."""
    spans = [match.span() for match in _SENTENCE.finditer(turn.text) if match.group().strip()]
    windows = []
    for position, (start, end) in enumerate(spans):
        windows.append(turn.text[start:end].strip())
        if position + 1 < len(spans):
            windows.append(turn.text[start : spans[position + 1][1]].strip())
    if not windows:
        windows.append(turn.text.strip())
    return [_widen(turn.text, window) for window in windows]


def _widen(text: str, window: str) -> str:
    """``window`` grown to whole neighbouring text until it has ``MIN_QUOTE_WORDS`` words (or is the turn)."""
    if len(window.split()) >= MIN_QUOTE_WORDS:
        return window
    start = text.find(window)
    end = start + len(window)
    words = [match.span() for match in re.finditer(r"\S+", text)]
    while len(text[start:end].split()) < MIN_QUOTE_WORDS and (start > 0 or end < len(text)):
        following = next((b for a, b in words if a >= end), None)
        if following is not None:
            end = following
            continue
        previous = [a for a, b in words if b <= start]
        start = previous[-1] if previous else 0
    return text[start:end].strip()


def _score(query: _Query, turn: Turn, window: str) -> _Passage:
    clauses = _analyse(window)
    present = {term for clause in clauses for _, term in clause if term}
    if query.names and query.names & set(fold(window).split()):  # "son nom": the agent says their name
        present.add(NAME_TERM)
    matched = tuple(term for term in query.weights if term in present)
    score = sum(query.weights[term] for term in matched) / query.total if query.total else 0.0
    polarity = _polarity(clauses, set(matched))
    contradicts = False
    for point_negated in (True, False):  # the point's negated words, then its affirmative ones
        group = [term for term in matched if query.negated.get(term, False) is point_negated]
        flipped = sum(query.weights[term] for term in group if polarity.get(term, point_negated) is not point_negated)
        contradicts = contradicts or flipped * 2 > sum(query.weights[term] for term in group)
    return _Passage(turn, window, score, matched, contradicts)


def _best_passages(query: _Query, turns: Sequence[Turn]) -> list[_Passage]:
    """The best passage of each turn that matches at least one term, best first (earlier turn on ties)."""
    best: list[tuple[float, int, _Passage]] = []
    for position, turn in enumerate(turns):
        candidates = [_score(query, turn, window) for window in _windows(turn)]
        candidates = [passage for passage in candidates if passage.matched]
        if candidates:
            top = max(candidates, key=lambda passage: (passage.score, -len(passage.text)))
            best.append((top.score, position, top))
    best.sort(key=lambda item: (-item[0], item[1]))
    return [passage for _, _, passage in best]


def _clears(query: _Query, passage: _Passage) -> bool:
    needed = min(MIN_MATCHED_TERMS, len(query.weights))
    return passage.score >= PASS_THRESHOLD and len(passage.matched) >= needed


def _condition_arises(condition: str, turns: Sequence[Turn]) -> bool:
    wanted = set(terms_of(condition))
    if not wanted:
        return True
    needed = len(wanted) if len(wanted) <= 2 else math.ceil(0.6 * len(wanted))
    return any(len(wanted & set(terms_of(turn.text))) >= needed for turn in turns)


def _quote(passage: _Passage) -> dict[str, Any]:
    return {"text": passage.text, "speaker": passage.turn.speaker}


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _where(passage: _Passage) -> str:
    speaker = "l'agent" if passage.turn.speaker == "agent" else "le client"
    call = f"appel {passage.turn.call_id}, " if passage.turn.call_id else ""
    return f"{speaker} ({call}{passage.turn.clock})"


def judge_point(point: ControlPointSpec, turns: Sequence[Turn], names: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The answer for one control point over ``turns``: ``{index, status, quotes, rationale}``. ``names``
    (the agent's, from the fiche) count as the word "nom" when the point asks for it."""
    query = _query(point, names)
    if point.conditional and query.condition and not _condition_arises(query.condition, turns):
        return {
            "index": point.index,
            "status": "not_applicable",
            "quotes": [],
            "rationale": f"La condition « {query.condition} » ne se présente pas dans l'appel.",
        }
    if not query.weights:
        return {
            "index": point.index,
            "status": "fail",
            "quotes": [],
            "rationale": "Le point de contrôle ne contient aucun mot à rechercher dans l'appel.",
        }
    own = [turn for turn in turns if point.speaker == "any" or turn.speaker == point.speaker]
    passages = _best_passages(query, own)  # only the words of whoever must say it prove the point
    top = passages[0] if passages else None
    if top is not None and _clears(query, top):
        words = ", ".join(top.matched)
        if top.contradicts:
            return {
                "index": point.index,
                "status": "fail",
                "quotes": [_quote(top)],
                "rationale": f"{_capitalized(_where(top))} dit le contraire de ce qui est attendu "
                f"(négation inversée ; mots : {words}).",
            }
        quotes = [_quote(top)]
        for passage in passages[1:]:
            if len(quotes) >= MAX_QUOTES:
                break
            if (
                _clears(query, passage)
                and not passage.contradicts
                and passage.turn != top.turn
                and passage.text != top.text
            ):
                quotes.append(_quote(passage))
        return {
            "index": point.index,
            "status": "pass",
            "quotes": quotes,
            "rationale": f"{_capitalized(_where(top))} le dit explicitement (mots retrouvés : {words}).",
        }
    wanted = ", ".join(list(query.weights)[:6])
    if top is not None and top.score >= PASS_THRESHOLD / 2 and len(top.text.split()) >= MIN_QUOTE_WORDS:
        return {
            "index": point.index,
            "status": "fail",
            "quotes": [_quote(top)],
            "rationale": f"Le passage le plus proche, chez {_where(top)}, ne suffit pas à établir le point "
            f"(mots recherchés : {wanted}).",
        }
    return {
        "index": point.index,
        "status": "fail",
        "quotes": [],
        "rationale": f"Aucun passage de l'appel n'établit ce point (mots recherchés : {wanted}).",
    }


def judge_step(
    points: Sequence[ControlPointSpec], turns: Sequence[Turn], names: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``{"control_points": [...]}`` for ``points`` over ``turns``."""
    return {"control_points": [judge_point(point, turns, names) for point in points]}


# --- Requests --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JudgeReply:
    """What the judge wants to say: a structured answer, tool calls, or chat text."""

    kind: Literal["answer", "tool_calls", "chat"]
    answer: dict[str, Any] | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    text: str = ""
    points: tuple[ControlPointSpec, ...] = ()
    transcript_text: str = ""


def _content_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def respond(body: Mapping[str, Any]) -> JudgeReply:
    """The judge's reply to a Chat Completions request body (already checked to hold a list of messages)."""
    messages = [message for message in body.get("messages", []) if isinstance(message, dict)]
    points: list[ControlPointSpec] = []
    transcript_parts: list[str] = []
    names: frozenset[str] = frozenset()
    for message in messages:
        if message.get("role") in ("system", "user"):
            text = _content_text(message)
            points = parse_control_points(text) or points
            names = agent_names(text) or names
            transcript = section(text, TRANSCRIPT_MARKER)
            if transcript is not None:
                transcript_parts.append(transcript)
    if not points:
        return _chat_reply(messages, body)

    if transcript_parts or not body.get("tools"):
        turns = _dedupe(turn for part in transcript_parts for turn in parse_turns(part))
        return JudgeReply(
            "answer",
            answer=judge_step(points, turns, names),
            points=tuple(points),
            transcript_text="\n".join(transcript_parts),
        )
    return _tools_reply(points, messages, body, names)


def _tools_reply(
    points: list[ControlPointSpec],
    messages: list[dict[str, Any]],
    body: Mapping[str, Any],
    names: frozenset[str] = frozenset(),
) -> JudgeReply:
    called: set[str] = set()
    searches: list[list[dict[str, Any]]] = []
    chunk_texts: list[str] = []
    for message in messages:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    called.add(str(function.get("name")))
        elif message.get("role") == "tool":
            result = _json_object(_content_text(message)) or {}
            if isinstance(result.get("results"), list):
                searches.append([hit for hit in result["results"] if isinstance(hit, dict)])
            chunks = result.get("chunks")
            for chunk in chunks if isinstance(chunks, list) else []:
                if isinstance(chunk, dict):
                    chunk_texts.append(f"### Appel {chunk.get('call_id') or 'inconnu'}\n{chunk.get('text', '')}")
    forced = body.get("tool_choice") == "none"
    if not forced and SEARCH_TOOL not in called:
        calls = []
        for point in points:
            condition, rest = _split_condition(point.question)
            query = " ".join(part for part in (point.evidence_hint or rest, condition or "") if part)
            calls.append((SEARCH_TOOL, {"query": query, "max_results": SEARCH_RESULTS_PER_POINT}))
        return JudgeReply("tool_calls", tool_calls=calls, points=tuple(points))
    if not forced and CHUNKS_TOOL not in called:
        wanted: list[str] = []
        for hits in searches:
            for hit in hits[:1]:
                chunk_id = hit.get("chunk_id")
                if isinstance(chunk_id, str) and chunk_id not in wanted:
                    wanted.append(chunk_id)
        if wanted:
            calls = [
                (CHUNKS_TOOL, {"chunk_ids": wanted[start : start + MAX_CHUNKS_PER_CALL]})
                for start in range(0, len(wanted), MAX_CHUNKS_PER_CALL)
            ]
            return JudgeReply("tool_calls", tool_calls=calls, points=tuple(points))
    text = "\n".join(chunk_texts)
    turns = parse_turns(text)
    if not turns:  # told to answer before reading chunks: the search snippets are all it has
        snippets = [str(hit.get("snippet", "")) for hits in searches for hit in hits]
        text = "\n".join(snippet.replace("…", " ").rstrip() for snippet in snippets)
        turns = parse_turns(text)
    turns = _dedupe(turns)
    return JudgeReply("answer", answer=judge_step(points, turns, names), points=tuple(points), transcript_text=text)


def _chat_reply(messages: list[dict[str, Any]], body: Mapping[str, Any]) -> JudgeReply:
    question_index = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if question_index is None:
        return JudgeReply("chat", text="Bonjour, quelle est votre question ?")
    question = _content_text(messages[question_index])
    wanted = set(terms_of(question))
    lines: list[tuple[float, int, str]] = []
    for position, message in enumerate(messages):
        if position == question_index or message.get("role") == "assistant":
            continue
        for line in _content_text(message).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            turn = TIMELINE_TURN_LINE.match(line)
            quoted = turn["text"].strip() if turn else line
            overlap = len(wanted & set(terms_of(quoted)))
            if overlap:
                label = f" ({turn['speaker']}, {turn['minutes']}:{turn['seconds']})" if turn else ""
                lines.append((overlap / math.sqrt(len(quoted.split()) + 1), len(lines), f"« {quoted} »{label}"))
    if not lines:
        return JudgeReply(
            "chat", text="Je ne trouve rien dans la transcription ni dans la fiche qui réponde à cette question."
        )
    best = [text for _, _, text in sorted(lines, key=lambda item: (-item[0], item[1]))[:2]]
    return JudgeReply(
        "chat", text="D'après les éléments disponibles, voici les passages pertinents : " + " ; ".join(best) + "."
    )


def fill_schema(schema: Mapping[str, Any]) -> Any:
    """A minimal value matching a JSON schema (answers a schema the judge does not know)."""
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("anyOf"), list) and schema["anyOf"]:
        return fill_schema(schema["anyOf"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: fill_schema(prop) for name, prop in properties.items() if isinstance(prop, dict)}
    if kind == "array":
        return []
    if kind == "string":
        return ""
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return None


# --- Misbehaviour helpers (used by the server's knobs) ---------------------------------------------------------

_FABRICATIONS: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (
        frozenset({"retract", "renonc", "14", "30"}),
        (
            "Vous avez bien quatorze jours pour changer d'avis, sans aucune pénalité, c'est la loi.",
            "Et bien sûr vous gardez un mois complet pour renoncer si jamais vous changez d'avis.",
        ),
    ),
    (
        frozenset({"enregistr", "conserv", "copi"}),
        (
            "Je vous signale que notre conversation est enregistrée et gardée trois ans dans nos serveurs.",
            "Cet échange est enregistré pour la qualité, vous pourrez l'écouter sur votre espace client.",
        ),
    ),
    (
        frozenset({"oria", "courti", "societ", "immatricul"}),
        (
            "Je suis conseillère chez Assurances du Centre, courtier enregistré sous le numéro 21 004 512.",
            "Nous sommes un cabinet de courtage agréé, inscrit au registre sous le numéro 19 887 340.",
        ),
    ),
    (
        frozenset({"sign", "document", "mail", "courri"}),
        (
            "Je vous envoie tout par courrier et vous aurez une semaine pour signer tranquillement chez vous.",
            "Aucune signature aujourd'hui, vous recevrez le contrat par voie postale d'ici la fin du mois.",
        ),
    ),
    (
        frozenset({"commercial", "vent", "offr", "propos"}),
        ("Je vous appelle dans le cadre d'une démarche commerciale pour vous présenter nos offres santé.",),
    ),
    (
        frozenset({"accept", "accord", "poursuivr", "consent"}),
        ("Est-ce que vous êtes d'accord pour qu'on continue quelques minutes ensemble ?",),
    ),
    (
        frozenset({"cotis", "prix", "tarif", "euro", "mensuel"}),
        ("Votre cotisation sera de trente-deux euros par mois, tout compris, sans frais de dossier.",),
    ),
)
_GENERIC_FABRICATIONS = (
    "Je vous confirme que tout cela est bien précisé dans les conditions générales du contrat.",
    "Comme je vous l'ai expliqué au début de l'appel, tout est noté dans votre dossier.",
)
_NUMBER_WORDS = (
    "deux",
    "trois",
    "quatre",
    "cinq",
    "six",
    "sept",
    "huit",
    "dix",
    "douze",
    "quatorze",
    "quinze",
    "vingt",
    "trente",
    "quarante",
    "cinquante",
    "soixante",
    "cent",
)
_DIGITS = re.compile(r"\d+(?:[.,]\d+)?")
_SUBJECT = re.compile(
    r"\b(?P<subject>je|tu|il|elle|on|nous|vous|ils|elles)\s+(?P<clitics>(?:(?:me|te|se|le|la|les|lui|leur|y|en|"
    r"vous|nous)\s+)*)(?P<verb>[a-zàâäéèêëîïôöùûüç]{2,}[a-zàâäéèêëîïôöùûüç'-]*)",
    re.IGNORECASE,
)
_NOT_VERBS = frozenset({"ne", "n", "pas", "aussi", "bien", "tout", "toujours", "donc", "alors", "aujourd", "même"})


def fabricate_quote(point: ControlPointSpec, transcript_text: str, rng: random.Random) -> str:
    """A plausible agent sentence about ``point`` that is not in the transcript."""
    wanted = set(terms_of(f"{point.question} {point.evidence_hint}"))
    on_topic = [sentence for keys, sentences in _FABRICATIONS if keys & wanted for sentence in sentences]
    rng.shuffle(on_topic)
    generic = list(_GENERIC_FABRICATIONS)
    rng.shuffle(generic)
    folded = fold(transcript_text)
    for sentence in on_topic + generic:
        if fold(sentence) not in folded:
            return sentence
    fallback = (on_topic + generic)[0]
    return f"Je vous le confirme encore une fois, {fallback[0].lower()}{fallback[1:]}"


def alter_numbers(text: str, rng: random.Random) -> str | None:
    """``text`` with one number changed (digits or a French number word); None when it holds no number."""
    match = _DIGITS.search(text)
    if match:
        number = match.group()
        integer, sep, decimals = (
            re.split(r"([.,])", number, maxsplit=1) if re.search(r"[.,]", number) else (number, "", "")
        )
        value = int(integer)
        changed = {14: 30, 30: 14, 2: 3, 24: 48}.get(value, value + rng.randint(1, 9))
        return f"{text[: match.start()]}{changed}{sep}{decimals}{text[match.end() :]}"
    for word in _NUMBER_WORDS:
        found = re.search(rf"\b{word}\b", text, re.IGNORECASE)
        if found:
            others = [other for other in _NUMBER_WORDS if other != word]
            replacement = others[rng.randrange(len(others))]
            if found.group()[0].isupper():
                replacement = replacement.capitalize()
            return f"{text[: found.start()]}{replacement}{text[found.end() :]}"
    return None


def has_negation(text: str) -> bool:
    words = set(_raw_words(text))
    return bool(words & {"ne", "pas", "jamais", "aucun", "aucune", "rien"})


def flip_negation(text: str) -> str | None:
    """``text`` with its negation removed, or a ``ne … pas`` added to its first verb; None when it cannot."""
    if has_negation(text):
        flipped = re.sub(r"\b(ne|n['’])\s*", "", text, count=1, flags=re.IGNORECASE)
        flipped = re.sub(r"\s+(pas|jamais|plus)\b", "", flipped, count=1, flags=re.IGNORECASE)
        flipped = re.sub(r"\baucune\b", "une", flipped, count=1, flags=re.IGNORECASE)
        flipped = re.sub(r"\baucun\b", "un", flipped, count=1, flags=re.IGNORECASE)
        flipped = re.sub(r"\s{2,}", " ", flipped)
        return flipped if flipped != text else None
    if re.search(r"\bc['’]est\b", text, re.IGNORECASE):
        return re.sub(r"\b([cC])['’]est\b", lambda m: f"{'C' if m.group(1) == 'C' else 'c'}e n'est pas", text, count=1)
    if re.search(r"\bil y a\b", text, re.IGNORECASE):
        return re.sub(r"\b([iI])l y a\b", lambda m: f"{m.group(1)}l n'y a pas", text, count=1)
    for match in _SUBJECT.finditer(text):
        verb = match["verb"]
        if verb.lower() in _NOT_VERBS:
            continue
        clitics = match["clitics"]
        head = clitics or verb
        particle = "n'" if head[0].lower() in "aeiouyhàâéèêîôû" else "ne "
        replacement = f"{match['subject']} {particle}{clitics}{verb} pas"
        return f"{text[: match.start()]}{replacement}{text[match.end() :]}"
    return None


def wrong_verdict(point: ControlPointSpec) -> dict[str, Any]:
    """The ``wrong_point`` knob: ``fail`` without quotes, whatever the call says."""
    return {
        "index": point.index,
        "status": "fail",
        "quotes": [],
        "rationale": "L'agent n'a pas abordé ce point pendant l'appel.",
    }


def dodge(point: ControlPointSpec) -> dict[str, Any]:
    """The ``dodge`` lie: ``not_applicable`` without evidence, whatever the point."""
    return {
        "index": point.index,
        "status": "not_applicable",
        "quotes": [],
        "rationale": "Ce point ne s'applique pas à cet appel.",
    }


def wrong_speaker(point: ControlPointSpec, transcript_text: str) -> dict[str, Any] | None:
    """The ``wrong_speaker`` lie: ``pass`` on the words of the other party (the client's words for an agent
    point), claimed as said by the point's speaker. None for an ``any`` point or a call without such words."""
    if point.speaker == "any":
        return None
    others = [turn for turn in parse_turns(transcript_text) if turn.speaker != point.speaker]
    passages = _best_passages(_query(point), others)
    text = passages[0].text if passages else ""
    if len(text.split()) < MIN_QUOTE_WORDS:
        text = next((turn.text for turn in others if len(turn.text.split()) >= MIN_QUOTE_WORDS), "")
    if not text:
        return None
    return {
        "index": point.index,
        "status": "pass",
        "quotes": [{"text": text, "speaker": point.speaker}],
        "rationale": "Le point est respecté, comme le montre la citation.",
    }


def point_terms(point: ControlPointSpec) -> list[str]:
    """The content terms the judge looks for (for tests and logs)."""
    return list(_query(point).weights)
