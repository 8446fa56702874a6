"""How many SMS segments a text costs, shown to the agent before sending.

A text made only of GSM 03.38 characters is sent as GSM-7: 160 septets in one segment, or
153 per segment once it has to be split (the User Data Header takes 7). Characters of the
extension table (``€ [ ] { } \\ ^ ~ |`` and form feed) take two septets (ESC + char). Any
other character switches the whole message to UCS-2: 70 UTF-16 code units, or 67 per segment
when split; characters outside the BMP (most emoji) are surrogate pairs and take two.

Neither an ESC pair nor a surrogate pair may be split across two segments, so the count is
done by filling segments greedily rather than by dividing the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The 128 positions of the GSM 03.38 default alphabet (0x1B is the escape to the extension
table, not a character a text may contain)."""

GSM7_EXTENSION = "\x0c^{}\\[~]|€"
"""Characters of the GSM 03.38 extension table: each costs ESC + itself."""

_BASIC = frozenset(GSM7_BASIC) - {"\x1b"}
_EXTENSION = frozenset(GSM7_EXTENSION)


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    encoding: Encoding
    units: int
    """Septets for GSM-7, UTF-16 code units for UCS-2."""
    segments: int
    per_segment: int
    """Capacity of each segment for this message (160/153 or 70/67)."""

    def as_dict(self) -> dict[str, int | str]:
        return {
            "segments": self.segments,
            "encoding": self.encoding.value,
            "units": self.units,
            "per_segment": self.per_segment,
        }


def _unit_sizes(text: str) -> tuple[Encoding, list[int]]:
    if all(ch in _BASIC or ch in _EXTENSION for ch in text):
        return Encoding.GSM7, [2 if ch in _EXTENSION else 1 for ch in text]
    return Encoding.UCS2, [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _pack(sizes: list[int], capacity: int) -> int:
    segments, used = 1, 0
    for size in sizes:
        if used + size > capacity:
            segments += 1
            used = 0
        used += size
    return segments


def count_segments(text: str) -> SegmentInfo:
    """Encoding and segment count of ``text`` as a single SMS (an empty text is one segment)."""
    encoding, sizes = _unit_sizes(text)
    single, multi = (160, 153) if encoding is Encoding.GSM7 else (70, 67)
    units = sum(sizes)
    if units <= single:
        return SegmentInfo(encoding, units, 1, single)
    return SegmentInfo(encoding, units, _pack(sizes, multi), multi)
