"""Domain errors of the chat app, rendered by the API error envelope before any stream starts."""

from core.exceptions import DependencyUnavailable, NotFoundError, ThrottledError


class ChatFicheNotFound(NotFoundError):
    code = "fiche_not_found"
    default_message = "This fiche is not cached: there is no call to chat about."


class ChatLlmNotConfigured(DependencyUnavailable):
    code = "llm_not_configured"
    default_message = "The LLM is not configured (LLM_BASE_URL / LLM_API_KEY)."


class ChatBusy(ThrottledError):
    code = "llm_busy"
    default_message = "Every LLM slot chats may use is busy; try again shortly."


class ChatStreamsLimit(ThrottledError):
    code = "chat_streams_limit"
    default_message = "You already have as many answers streaming as allowed; wait for one to end."


class ChatSlotsUnavailable(DependencyUnavailable):
    code = "llm_slots_unavailable"
    default_message = "Cannot reserve an LLM slot right now (Redis is unavailable); try again shortly."
