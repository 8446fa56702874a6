"""Boundary models: normalisation, derived fields and refusals."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from tidings import (
    Address,
    AddressKind,
    Attachment,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
    map_status,
)
from tidings.models import AttachmentLimits, StatusUpdate, advances, merge_matches
from tidings.models.contacts import ContactMatch


@pytest.mark.parametrize(
    "raw",
    ["+48 600 100 200", "0048600100200", "48600100200", "+48-600-100-200", "(+48) 600100200"],
)
def test_phone_numbers_normalise_to_e164(raw: str) -> None:
    assert Address.phone(raw).value == "+48600100200"
    assert Address(kind=AddressKind.PHONE, value=raw).key == "phone:+48600100200"


def test_national_phone_number_needs_a_region() -> None:
    assert Address.phone("600 100 200", region="PL").value == "+48600100200"
    with pytest.raises(ValueError, match="not a p"):
        Address.phone("12")


def test_invalid_phone_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a phone number"):
        Address(kind=AddressKind.PHONE, value="call me")


def test_email_domain_is_lower_cased_local_part_kept() -> None:
    a = Address.email("Jan.Kowalski@Example.COM", name="Jan")
    assert a.value == "Jan.Kowalski@example.com"
    assert a == Address.email("<Jan.Kowalski@example.com>", name="Jan")
    assert Address.email("x@BÜCHER.de").value == "x@xn--bcher-kva.de"


@pytest.mark.parametrize("bad", ["no-at-sign", "a@b", "a b@c.de", "a@b.c\r\nBcc: x@y.z"])
def test_bad_email_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Address(kind=AddressKind.EMAIL, value=bad)


def test_scoped_ids_need_a_scope_and_include_it_in_the_key() -> None:
    psid = Address.scoped("1254459154682919", scope="page-42")
    assert psid.key == "scoped:page-42:1254459154682919"
    assert psid != Address.scoped("1254459154682919", scope="page-43")
    with pytest.raises(ValidationError, match="needs its scope"):
        Address(kind=AddressKind.SCOPED, value="1")
    with pytest.raises(ValidationError, match="has no scope"):
        Address(kind=AddressKind.EMAIL, value="a@b.cd", scope="x")


def test_display_name_is_not_identity() -> None:
    assert Address.email("a@b.cd", name="A").key == Address.email("a@b.cd").key


def test_attachment_derives_size_and_hash() -> None:
    att = Attachment(filename="scan.pdf", content_type="Application/PDF; name=x", data=b"%PDF-1")
    assert att.size == 6
    assert att.content_type == "application/pdf"


def test_attachment_hash_is_sha256_of_data() -> None:
    import hashlib

    att = Attachment(filename="a.txt", data=b"hello")
    assert att.sha256 == hashlib.sha256(b"hello").hexdigest()


def test_attachment_refuses_mismatched_size_or_hash() -> None:
    with pytest.raises(ValidationError, match="size does not match"):
        Attachment(filename="a", data=b"abc", size=4)
    with pytest.raises(ValidationError, match="sha256 does not match"):
        Attachment(filename="a", data=b"abc", sha256="0" * 64)


def test_attachment_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="either data or a url"):
        Attachment(filename="a")
    with pytest.raises(ValidationError, match="either data or a url"):
        Attachment(filename="a", data=b"x", url="https://example.com/a")


def test_attachment_filename_is_never_a_path() -> None:
    assert Attachment(filename="../../etc/passwd", data=b"").filename == "_.._etc_passwd"
    assert Attachment(filename="a\r\nb.txt", data=b"").filename == "a__b.txt"


def test_attachment_limits_match_types() -> None:
    limits = AttachmentLimits(content_types=("image/*", "application/pdf"))
    assert limits.allows("image/png")
    assert limits.allows("application/pdf")
    assert not limits.allows("audio/ogg")
    assert AttachmentLimits().allows("anything/else")


def test_status_never_moves_backwards() -> None:
    s = DeliveryStatus
    assert advances(None, s.SENT)
    assert advances(s.QUEUED, s.SENT)
    assert advances(s.SENT, s.DELIVERED)
    assert advances(s.DELIVERED, s.READ)
    assert advances(s.FAILED, s.READ)  # a read receipt proves delivery
    assert not advances(s.DELIVERED, s.SENT)
    assert not advances(s.DELIVERED, s.DELIVERED)  # idempotent
    assert not advances(s.DELIVERED, s.FAILED)  # first final answer wins
    assert not advances(s.READ, s.DELIVERED)
    assert not advances(s.SENT, s.UNKNOWN)
    assert advances(s.UNKNOWN, s.QUEUED)
    assert [x.is_final for x in (s.SENT, s.DELIVERED, s.UNDELIVERED, s.READ)] == [
        False,
        True,
        True,
        True,
    ]


def test_unknown_provider_words_map_to_unknown() -> None:
    table = {"delivered": DeliveryStatus.DELIVERED}
    assert map_status("Delivered ", table) is DeliveryStatus.DELIVERED
    assert map_status("partially_delivered", table) is DeliveryStatus.UNKNOWN
    assert map_status(None, table) is DeliveryStatus.UNKNOWN
    update = StatusUpdate(
        provider_id="SM1", status=map_status("weird", table), raw_status="weird", error_code="1"
    )
    assert update.raw_status == "weird"
    assert update.status is DeliveryStatus.UNKNOWN


def test_inbound_naive_timestamps_become_utc() -> None:
    msg = InboundMessage(
        provider_id="1", sender=Address.phone("+48600100200"), sent_at=datetime(2026, 1, 1, 12)
    )
    assert msg.sent_at.utcoffset() is not None
    assert msg.sent_at.hour == 12


def test_outbound_needs_a_recipient() -> None:
    with pytest.raises(ValidationError, match="to"):
        OutboundMessage(id="m1", to=())


def test_contact_answers_merge_without_duplicates() -> None:
    a = ContactMatch(source="builtin", external_id="1", display_name="A")
    b = ContactMatch(source="crm", external_id="1", display_name="B")
    a2 = ContactMatch(source="builtin", external_id="1", display_name="A again")
    assert merge_matches([[a, b], [a2]]) == [a, b]


@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize(
    "address",
    [
        Address.phone("+48 600 100 200"),
        Address.email("Jan.Kowalski@Example.COM"),
        Address.scoped("6789", scope="page-1"),
        Address.handle("chat-42"),
    ],
)
def test_from_key_gives_back_the_address(address: Address, normalised: bool) -> None:
    """A stored key names its address again, whether or not it is normalised again."""
    assert Address.from_key(address.key, normalised=normalised) == address


@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("key", ["fax:+48600100200", "phone", "nothing-here"])
def test_from_key_refuses_what_is_not_a_key(key: str, normalised: bool) -> None:
    with pytest.raises(ValueError, match="not an address key"):
        Address.from_key(key, normalised=normalised)
