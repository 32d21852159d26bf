"""Tools mode: the functions an LLM may call to read a sale's transcript instead of receiving it whole.

Contract (also the simulator's, see ``audits.simulator.judge``):

- A **chunk** is ``{"chunk_id": "<call_id>#<n>", "call_id": str, "start": float, "end": float, "text": str,
  "turn_indices": list[int]}``; ``text`` holds rendered turn lines ``[mm:ss] Agent: …`` / ``[mm:ss] Client: …``
  (the timeline text format of ``audits.prompts``). Chunks are produced elsewhere from the stored timeline;
  ``chunks_from_timeline_text`` builds them from the timeline text (tests, demos).
- ``TOOL_SPECS``: the OpenAI ``tools`` definitions (strict) of
  ``searchTranscript({query: string, max_results: integer})`` and ``getTranscriptChunks({chunk_ids: string[]})``.
- ``TranscriptTools(chunks).handle(name, args) -> str`` runs one tool call and returns its JSON result; bad
  arguments and unknown tools give ``{"error": "…"}`` (never an exception), so it plugs straight into
  ``llm.client.complete_structured(tool_handler=...)``.

Search ranks chunks with BM25 over normalized tokens: French number words become digits (``text2num``),
accents and case are folded, elisions (``l'``, ``d'``, ``qu'`` …) and French stop words are dropped and a
light suffix stemmer maps ``rétractation``/``rétracter`` to one stem. Snippets are the best-matching line of
a chunk, cut to ``SNIPPET_CHARS`` around the first matching word. Results are kept short on purpose: every
tool result is sent back to the model on each later round.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from text_to_num import alpha2digit

from llm.client import ToolSpec

SEARCH_TOOL = "searchTranscript"
CHUNKS_TOOL = "getTranscriptChunks"
DEFAULT_SEARCH_RESULTS = 5
MAX_SEARCH_RESULTS = 10
MAX_CHUNKS_PER_CALL = 4
SNIPPET_CHARS = 160
BM25_K1 = 1.5
BM25_B = 0.75


class Chunk(TypedDict):
    chunk_id: str
    call_id: str
    start: float
    end: float
    text: str
    turn_indices: list[int]


class SearchHit(TypedDict):
    chunk_id: str
    call_id: str
    start: float
    end: float
    snippet: str
    score: float


TOOL_SPECS: list[ToolSpec] = [
    {
        "type": "function",
        "function": {
            "name": SEARCH_TOOL,
            "description": (
                "Cherche dans la transcription des appels les passages qui contiennent les mots de la requête "
                "(sans tenir compte des accents ni des majuscules). Renvoie, du plus pertinent au moins pertinent, "
                "l'identifiant du passage (chunk_id), ses bornes en secondes et un court extrait."
            ),
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "description": "Mots-clés en français, par exemple « délai de rétractation 14 jours ».",
                    },
                    "max_results": {
                        "type": "integer",
                        "description": f"Nombre de résultats (1 à {MAX_SEARCH_RESULTS}).",
                    },
                },
                "required": ["query", "max_results"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": CHUNKS_TOOL,
            "description": (
                "Renvoie le texte complet des passages demandés (répliques horodatées « [mm:ss] Agent: … »), "
                f"au plus {MAX_CHUNKS_PER_CALL} par appel. Citez uniquement ce texte."
            ),
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "chunk_ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Identifiants renvoyés par searchTranscript.",
                    },
                },
                "required": ["chunk_ids"],
                "additionalProperties": False,
            },
        },
    },
]

# --- Text normalization (shared with the simulator's lexical judge) -----------------------------------------

FRENCH_STOP_WORDS: frozenset[str] = frozenset(
    [
        "a",
        "ai",
        "aie",
        "aient",
        "aies",
        "ait",
        "alors",
        "as",
        "au",
        "aussi",
        "autre",
        "aux",
        "avaient",
        "avais",
        "avait",
        "avant",
        "avec",
        "avez",
        "aviez",
        "avions",
        "avoir",
        "avons",
        "ayant",
        "ben",
        "bien",
        "bon",
        "c",
        "ca",
        "car",
        "ce",
        "ceci",
        "cela",
        "celle",
        "celles",
        "celui",
        "ces",
        "cet",
        "cette",
        "ceux",
        "chaque",
        "ci",
        "comme",
        "comment",
        "d",
        "dans",
        "de",
        "des",
        "donc",
        "dont",
        "du",
        "elle",
        "elles",
        "en",
        "encore",
        "es",
        "est",
        "et",
        "etaient",
        "etais",
        "etait",
        "etant",
        "ete",
        "etes",
        "etre",
        "eu",
        "euh",
        "eux",
        "fait",
        "faire",
        "fais",
        "faut",
        "hein",
        "hum",
        "ici",
        "il",
        "ils",
        "j",
        "je",
        "jusqu",
        "l",
        "la",
        "le",
        "les",
        "leur",
        "leurs",
        "lui",
        "m",
        "ma",
        "mais",
        "me",
        "meme",
        "mes",
        "moi",
        "mon",
        "n",
        "ne",
        "ni",
        "nos",
        "notre",
        "nous",
        "o",
        "oh",
        "ok",
        "on",
        "ont",
        "ou",
        "oui",
        "par",
        "parce",
        "pas",
        "peu",
        "peut",
        "plus",
        "pour",
        "pourquoi",
        "qu",
        "quand",
        "que",
        "quel",
        "quelle",
        "quelles",
        "quels",
        "qui",
        "quoi",
        "s",
        "sa",
        "sans",
        "se",
        "sera",
        "ses",
        "si",
        "sien",
        "soit",
        "sommes",
        "son",
        "sont",
        "sous",
        "suis",
        "sur",
        "t",
        "ta",
        "te",
        "tes",
        "toi",
        "ton",
        "tous",
        "tout",
        "toute",
        "toutes",
        "tres",
        "tu",
        "un",
        "une",
        "vers",
        "voila",
        "vos",
        "votre",
        "vous",
        "vu",
        "y",
    ]
)

_SUFFIXES: tuple[str, ...] = (
    "issements",
    "issement",
    "atrices",
    "ateurs",
    "ations",
    "atrice",
    "ateur",
    "ation",
    "atures",
    "ature",
    "ements",
    "ement",
    "ances",
    "ences",
    "ance",
    "ence",
    "ables",
    "able",
    "istes",
    "iste",
    "ites",
    "ite",
    "euses",
    "euse",
    "eux",
    "ees",
    "ee",
    "es",
    "er",
    "ez",
    "e",
    "s",
    "x",
)
_MIN_STEM = 4
_VERB_RE = re.compile(r"(?:(?<=[vd])|(?<=tt))(?:res?|ions)$")  # not -tré: enregistré folds to enregistre
# Small numbers text2num leaves as words when they stand alone ("deux ans").
_SMALL_NUMBERS = {
    "deux": "2",
    "trois": "3",
    "quatre": "4",
    "cinq": "5",
    "six": "6",
    "sept": "7",
    "huit": "8",
    "dix": "10",
    "onze": "11",
    "douze": "12",
    "treize": "13",
    "quinze": "15",
    "seize": "16",
}
_ELISION = re.compile(r"\b(?:[cdjlmnst]|qu|jusqu|lorsqu|puisqu)'", re.IGNORECASE)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+")


def fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes made plain."""
    decomposed = unicodedata.normalize("NFKD", text.replace("’", "'").replace("œ", "oe").replace("Œ", "oe"))
    return "".join(char for char in decomposed if not unicodedata.combining(char)).lower()


def words(text: str) -> list[str]:
    """The folded words of ``text`` with French number words as digits and elided articles dropped."""
    try:
        text = alpha2digit(text, "fr")
    except (ValueError, RuntimeError):  # never expected; normalization must not fail on odd input
        pass
    return _TOKEN.findall(_ELISION.sub(" ", fold(text)))


def stem(word: str) -> str:
    """A light French stemmer: ``rétractation``, ``rétracter`` → ``retract``; ``résiliation``, ``résilié`` →
    ``resil``; small number words become digits; other digits are kept as they are."""
    if word in _SMALL_NUMBERS:
        return _SMALL_NUMBERS[word]
    if word[0].isdigit() or len(word) <= _MIN_STEM:
        return word
    verb_re = _VERB_RE.search(word)  # poursuivre, poursuivions → poursuiv; not assuré (a vowel before "ré")
    if verb_re and verb_re.start() >= _MIN_STEM:
        return word[: verb_re.start()]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            word = word[: -len(suffix)]
            break
    if len(word) >= 6 and word.endswith("i"):  # résili(ation|é|er), garanti(e|es), renonci(ation)
        word = word[:-1]
    return word


def normalize_tokens(text: str) -> list[str]:
    """Stems of the content words of ``text`` (stop words dropped), in order, repeats kept."""
    return [stem(word) for word in words(text) if word not in FRENCH_STOP_WORDS]


# --- Timeline chunks -----------------------------------------------------------------------------------------

_CALL_HEADER = re.compile(r"^###\s+Appel\s+(\S+)")
_TURN_LINE = re.compile(r"^\[(\d+):([0-5]\d)\]\s+(Agent|Client)\s*:\s?(.*)$")


def parse_clock(minutes: str, seconds: str) -> float:
    return float(int(minutes) * 60 + int(seconds))


def chunks_from_timeline_text(timeline_text: str, *, max_chars: int = 900) -> list[Chunk]:
    """Cut a timeline text (``### Appel <id> …`` headers, ``[mm:ss] Agent: …`` lines) into chunks of whole turns.

    A chunk holds consecutive turns of one call, at most ``max_chars`` characters (a longer turn is a chunk of
    its own). ``turn_indices`` number the turns within their call from 0; ``end`` is the start of the next turn
    of the call (the last turn's own start when there is none). Chunk numbers ``n`` start at 1 per call.
    """
    calls: list[tuple[str, list[tuple[float, str]]]] = []
    for line in timeline_text.splitlines():
        header = _CALL_HEADER.match(line)
        if header:
            calls.append((header.group(1), []))
            continue
        turn = _TURN_LINE.match(line)
        if turn:
            if not calls:
                calls.append(("appel", []))
            calls[-1][1].append((parse_clock(turn.group(1), turn.group(2)), line.strip()))
    chunks: list[Chunk] = []
    for call_id, turns in calls:
        groups: list[list[int]] = []
        size = 0
        for index, (_, line) in enumerate(turns):
            if groups and size + len(line) + 1 <= max_chars:
                groups[-1].append(index)
                size += len(line) + 1
            else:
                groups.append([index])
                size = len(line)
        for number, indices in enumerate(groups, start=1):
            after = indices[-1] + 1
            chunks.append(
                {
                    "chunk_id": f"{call_id}#{number}",
                    "call_id": call_id,
                    "start": turns[indices[0]][0],
                    "end": turns[after][0] if after < len(turns) else turns[indices[-1]][0],
                    "text": "\n".join(turns[index][1] for index in indices),
                    "turn_indices": indices,
                }
            )
    return chunks


# --- The tools -----------------------------------------------------------------------------------------------


class _ToolArgumentError(ValueError):
    pass


class TranscriptTools:
    """Search and read over a fixed list of chunks (one sale's timeline)."""

    def __init__(self, chunks: Sequence[Mapping[str, Any]]) -> None:
        self._chunks: list[Chunk] = [_as_chunk(chunk) for chunk in chunks]
        self._by_id: dict[str, Chunk] = {chunk["chunk_id"]: chunk for chunk in self._chunks}
        self._docs: list[Counter[str]] = [Counter(normalize_tokens(chunk["text"])) for chunk in self._chunks]
        self._lengths = [sum(doc.values()) for doc in self._docs]
        self._avg_length = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        document_frequency: Counter[str] = Counter()
        for doc in self._docs:
            document_frequency.update(doc.keys())
        total = len(self._docs)
        self._idf = {
            token: math.log(1 + (total - count + 0.5) / (count + 0.5)) for token, count in document_frequency.items()
        }

    @property
    def chunks(self) -> list[Chunk]:
        return list(self._chunks)

    def search(self, query: str, max_results: int = DEFAULT_SEARCH_RESULTS) -> list[SearchHit]:
        """The best chunks for ``query`` (BM25, accent- and case-insensitive), best first; only chunks that match."""
        limit = max(1, min(int(max_results), MAX_SEARCH_RESULTS))
        terms = list(dict.fromkeys(normalize_tokens(query)))
        if not terms or not self._docs:
            return []
        scored: list[tuple[float, int]] = []
        for position, doc in enumerate(self._docs):
            score = self._bm25(terms, doc, self._lengths[position])
            if score > 0:
                scored.append((score, position))
        scored.sort(key=lambda item: (-item[0], item[1]))
        hits: list[SearchHit] = []
        for score, position in scored[:limit]:
            chunk = self._chunks[position]
            hits.append(
                {
                    "chunk_id": chunk["chunk_id"],
                    "call_id": chunk["call_id"],
                    "start": chunk["start"],
                    "end": chunk["end"],
                    "snippet": self._snippet(chunk["text"], terms),
                    "score": round(score, 3),
                }
            )
        return hits

    def get_chunks(self, chunk_ids: Iterable[str]) -> list[Chunk]:
        """The known chunks among ``chunk_ids`` (duplicates once, request order), at most ``MAX_CHUNKS_PER_CALL``."""
        found: list[Chunk] = []
        for chunk_id in dict.fromkeys(chunk_ids):
            chunk = self._by_id.get(chunk_id)
            if chunk is not None and len(found) < MAX_CHUNKS_PER_CALL:
                found.append(chunk)
        return found

    def handle(self, name: str, args: Mapping[str, Any]) -> str:
        """Run one tool call; the result (or ``{"error": …}``) as a compact JSON string."""
        try:
            if name == SEARCH_TOOL:
                result = self._handle_search(args)
            elif name == CHUNKS_TOOL:
                result = self._handle_chunks(args)
            else:
                raise _ToolArgumentError(f"outil inconnu : {name!r} (outils : {SEARCH_TOOL}, {CHUNKS_TOOL})")
        except _ToolArgumentError as exc:
            result = {"error": str(exc)}
        return json.dumps(result, ensure_ascii=False, separators=(",", ":"))

    def _handle_search(self, args: Mapping[str, Any]) -> dict[str, Any]:
        query = args.get("query") if isinstance(args, Mapping) else None
        if not isinstance(query, str) or not query.strip():
            raise _ToolArgumentError("query doit être une chaîne non vide")
        max_results = args.get("max_results", DEFAULT_SEARCH_RESULTS)
        if max_results is None:
            max_results = DEFAULT_SEARCH_RESULTS
        if not isinstance(max_results, int) or isinstance(max_results, bool):
            raise _ToolArgumentError("max_results doit être un entier")
        hits = self.search(query, max_results)
        return {"results": hits} if hits else {"results": [], "note": "aucun passage ne correspond à la requête"}

    def _handle_chunks(self, args: Mapping[str, Any]) -> dict[str, Any]:
        chunk_ids = args.get("chunk_ids") if isinstance(args, Mapping) else None
        if isinstance(chunk_ids, str):
            chunk_ids = [chunk_ids]
        if not isinstance(chunk_ids, list) or not chunk_ids or not all(isinstance(item, str) for item in chunk_ids):
            raise _ToolArgumentError("chunk_ids doit être une liste non vide d'identifiants")
        requested = list(dict.fromkeys(chunk_ids))
        chunks = self.get_chunks(requested)
        returned = {chunk["chunk_id"] for chunk in chunks}
        result: dict[str, Any] = {
            "chunks": [{key: chunk[key] for key in ("chunk_id", "call_id", "start", "end", "text")} for chunk in chunks]
        }
        unknown = [chunk_id for chunk_id in requested if chunk_id not in self._by_id]
        if unknown:
            result["unknown_chunk_ids"] = unknown
        skipped = [chunk_id for chunk_id in requested if chunk_id in self._by_id and chunk_id not in returned]
        if skipped:
            result["not_returned"] = skipped
            result["note"] = f"au plus {MAX_CHUNKS_PER_CALL} passages par appel"
        return result

    def _bm25(self, terms: list[str], doc: Counter[str], length: int) -> float:
        score = 0.0
        norm = BM25_K1 * (1 - BM25_B + BM25_B * (length / self._avg_length if self._avg_length else 0.0))
        for term in terms:
            frequency = doc.get(term, 0)
            if frequency:
                score += self._idf[term] * frequency * (BM25_K1 + 1) / (frequency + norm)
        return score

    def _snippet(self, text: str, terms: list[str]) -> str:
        """The line of ``text`` matching the most query weight, cut around its first match."""
        wanted = set(terms)
        best_line, best_score = "", -1.0
        for line in text.splitlines():
            line_terms = set(normalize_tokens(line))
            score = sum(self._idf.get(term, 0.0) for term in line_terms & wanted)
            if score > best_score:
                best_line, best_score = line, score
        return _cut_around(best_line, wanted)


_TURN_PREFIX = re.compile(r"^\[\d+:\d{2}\]\s+(?:Agent|Client)\s*:\s?")


def _cut_around(line: str, wanted: set[str]) -> str:
    """``line`` cut to about ``SNIPPET_CHARS`` characters around its first wanted word; the turn prefix is kept."""
    if len(line) <= SNIPPET_CHARS:
        return line
    prefix = _TURN_PREFIX.match(line)
    head = prefix.group(0) if prefix else ""
    body = line[len(head) :]
    budget = max(SNIPPET_CHARS - len(head), 40)
    spans = [match.span() for match in re.finditer(r"\S+", body)]
    first = next((i for i, (a, b) in enumerate(spans) if set(normalize_tokens(body[a:b])) & wanted), 0)
    start = max(first - 3, 0)
    begin, end = spans[start][0], spans[start][1]
    for _, b in spans[start:]:
        if b - begin > budget:
            break
        end = b
    return f"{head}{'…' if start else ''}{body[begin:end]}{'…' if end < len(body) else ''}"


def _as_chunk(chunk: Mapping[str, Any]) -> Chunk:
    return {
        "chunk_id": str(chunk["chunk_id"]),
        "call_id": str(chunk["call_id"]),
        "start": float(chunk["start"]),
        "end": float(chunk["end"]),
        "text": str(chunk["text"]),
        "turn_indices": [int(index) for index in chunk.get("turn_indices", [])],
    }
