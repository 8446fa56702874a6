"""Segment counting shown before sending (compose_info), GSM-7 and UCS-2."""

from __future__ import annotations

import pytest
from sms_twilio_samples import account, outbound

from tidings_sms_twilio import TwilioSms
from tidings_sms_twilio.segments import GSM7_BASIC, GSM7_EXTENSION, Encoding, count_segments

A, E, Q, SMILE = "a", "€", "ą", "😀"


def test_alphabets() -> None:
    assert len(GSM7_BASIC) == 128
    assert len(set(GSM7_BASIC)) == 128
    assert len(GSM7_EXTENSION) == 10


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", Encoding.GSM7, 0, 1),
        (A * 160, Encoding.GSM7, 160, 1),
        (A * 161, Encoding.GSM7, 161, 2),
        (A * 306, Encoding.GSM7, 306, 2),
        (A * 307, Encoding.GSM7, 307, 3),
        ("Zamowienie nr 12 (ÄÖÜ, é, ñ, ß) @ £5\n", Encoding.GSM7, 37, 1),
        ("Zamówienie", Encoding.UCS2, 10, 1),
        (E * 80, Encoding.GSM7, 160, 1),  # extension characters count double
        (E * 81, Encoding.GSM7, 162, 2),
        ("[]{}~^|\\", Encoding.GSM7, 16, 1),
        (A * 152 + E, Encoding.GSM7, 154, 1),
        # 306 septets would fit two segments, but an ESC pair is never split: three.
        (A * 152 + E + A * 152, Encoding.GSM7, 306, 3),
        (Q, Encoding.UCS2, 1, 1),
        ("ç", Encoding.UCS2, 1, 1),  # only the capital Ç is in GSM 03.38
        (Q * 70, Encoding.UCS2, 70, 1),
        (Q * 71, Encoding.UCS2, 71, 2),
        (Q * 134, Encoding.UCS2, 134, 2),
        (Q * 135, Encoding.UCS2, 135, 3),
        (A * 159 + Q, Encoding.UCS2, 160, 3),  # one non-GSM character switches everything
        (SMILE * 35, Encoding.UCS2, 70, 1),  # surrogate pairs: two units each
        (SMILE * 36, Encoding.UCS2, 72, 2),
        (A * 68 + SMILE, Encoding.UCS2, 70, 1),
        # 134 units would fit two segments, but a surrogate pair is never split: three.
        (Q * 66 + SMILE + Q * 66, Encoding.UCS2, 134, 3),
    ],
)
def test_segment_table(text: str, encoding: Encoding, units: int, segments: int) -> None:
    info = count_segments(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)
    single, multi = (160, 153) if encoding is Encoding.GSM7 else (70, 67)
    assert info.per_segment == (single if segments == 1 else multi)


def test_compose_info() -> None:
    channel = TwilioSms()
    info = channel.compose_info(account(), outbound("Cześć! 😀"))
    assert info == {
        "segments": 1,
        "encoding": "UCS-2",
        "units": 9,
        "per_segment": 70,
        "max_length": 1600,
        "too_long": False,
    }
    long = channel.compose_info(account(), outbound(A * 1601))
    assert (long["segments"], long["too_long"]) == (11, True)
    mms = channel.compose_info(account(), outbound("hi", media=["https://f.example/a.jpg"]))
    assert mms["mms"] is True
