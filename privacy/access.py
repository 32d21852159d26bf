"""Who reads personal data in clear.

The stored transcripts keep phone numbers, e-mails, IBANs, NIRs, dates of birth and addresses (card numbers
and one-time codes are never stored). They are shown in clear only to the users who manage the calls: those
holding the **write** grant of ``transcriptions`` or of ``recordings``. Every other reader (read-only QA,
supervisors, agents, viewers) gets the same texts with typed placeholders: transcripts and their words, the
timeline, audit quotes and rationales, and the chat's context and quotes.
"""

from __future__ import annotations

from typing import Any

from accounts.grants import has_grant

CLEAR_READERS: tuple[str, ...] = ("transcriptions", "recordings")


def sees_personal_data(user: Any) -> bool:
    """Whether ``user`` reads transcripts with their personal data in clear (see the module's rule)."""
    return any(has_grant(user, key, "write") for key in CLEAR_READERS)
