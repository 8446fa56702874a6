"""Base subjects for email threading: the subject a person would recognise as "the same".

Mail clients prefix replies and forwards in their user's language (Re, AW, SV, Odp, RV…),
sometimes stacked or numbered (``Re[2]:``), and mailing lists add ``[list]`` tags. Threading
by subject compares what is left after all of that, case-insensitively.
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header

_PREFIXES = (
    "re|fw|fwd|aw|wg|sv|vs|odp|pd|rv|enc|tr|antw|antwort|vl|r|res|rif|i|fs|ynt|ilt|"
    "odg|atb|tr|doorst|wtr|vb|bls|trs|πρθ|απ|回复|转发|答复|回覆"
)
_PREFIX = re.compile(
    rf"^\s*(?:(?:{_PREFIXES})\s*(?:\[\d+\]|\(\d+\))?\s*[:\uff1a]|\[[^\]]{{0,100}}\])\s*",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
# Old clients forward as "[Fwd: subject]": the brackets wrap the whole subject.
_WRAPPED = re.compile(rf"^\[((?:{_PREFIXES})\s*[:\uff1a].*)\]$", re.IGNORECASE)


def decode_subject(subject: str) -> str:
    """Decode RFC 2047 encoded-words a channel may have left in place."""
    if "=?" not in subject:
        return subject
    try:
        return str(make_header(decode_header(subject)))
    except (UnicodeDecodeError, LookupError, ValueError):
        return subject


def base_subject(subject: str | None) -> str:
    """The subject without reply/forward prefixes and list tags, folded for comparison."""
    text = _SPACE.sub(" ", decode_subject(subject or "")).strip()
    while True:
        wrapped = _WRAPPED.match(text)
        stripped = wrapped.group(1) if wrapped else _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text.strip().casefold()
