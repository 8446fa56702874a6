"""Reply rules from capabilities: what each kind of channel refuses, and why."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings import (
    Address,
    Attachment,
    AttachmentLimits,
    Capabilities,
    OutboundMessage,
    TemplateRef,
)
from tidings.errors import NotAllowed
from tidings.outbound import check_outbound, outbound_problems

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TO = (Address.phone("+48600100200"),)

SMS = Capabilities(max_text_length=1600)
WEBFORM = Capabilities(can_reply=False, can_initiate=False)
WHATSAPP = Capabilities(
    reply_window=timedelta(hours=24),
    outside_window=("template",),
    attachments=AttachmentLimits(max_count=1, max_bytes=100, content_types=("image/*",)),
)
MESSENGER = Capabilities(reply_window=timedelta(hours=24), outside_window=("message_tag",))
EMAIL = Capabilities(subject=True, cc_bcc=True, html=True, attachments=AttachmentLimits())


def msg(**fields: Any) -> OutboundMessage:
    return OutboundMessage(**{"id": "m1", "to": TO, "text": "hello", **fields})


def check(caps: Capabilities, message: OutboundMessage, **kw: Any) -> None:
    args: dict[str, Any] = {"is_reply": True, "last_inbound_at": NOW - timedelta(hours=1)}
    args.update(kw)
    check_outbound(caps, message, now=NOW, **args)


def test_plain_reply_on_a_two_way_channel_is_allowed() -> None:
    check(SMS, msg())
    check(SMS, msg(), is_reply=False, last_inbound_at=None)


def test_replying_where_the_channel_cannot_is_refused() -> None:
    with pytest.raises(NotAllowed, match="cannot send replies"):
        check(WEBFORM, msg())


def test_starting_a_conversation_where_the_channel_cannot_is_refused() -> None:
    with pytest.raises(NotAllowed, match="cannot start a conversation"):
        check(WEBFORM, msg(), is_reply=False, last_inbound_at=None)
    cannot_initiate = Capabilities(can_initiate=False)
    check(cannot_initiate, msg())  # a reply is still fine
    with pytest.raises(NotAllowed, match="customer must write first"):
        check(cannot_initiate, msg(), is_reply=False, last_inbound_at=None)


def test_free_text_inside_the_window_is_allowed() -> None:
    check(WHATSAPP, msg(), last_inbound_at=NOW - timedelta(hours=23, minutes=59))
    check(WHATSAPP, msg(), last_inbound_at=NOW - timedelta(hours=24))  # the edge is inside


def test_free_text_outside_the_window_is_refused_naming_the_way_out() -> None:
    with pytest.raises(NotAllowed, match=r"within 24 h .* allows an approved template"):
        check(WHATSAPP, msg(), last_inbound_at=NOW - timedelta(hours=24, seconds=1))
    with pytest.raises(NotAllowed, match="never written"):
        check(WHATSAPP, msg(), is_reply=False, last_inbound_at=None)
    with pytest.raises(NotAllowed, match="allows a message tag"):
        check(MESSENGER, msg(), last_inbound_at=NOW - timedelta(days=2))


def test_template_or_tag_opens_the_closed_window() -> None:
    template = TemplateRef(name="order_update", language="pl")
    check(WHATSAPP, msg(text="", template=template), last_inbound_at=NOW - timedelta(days=3))
    check(WHATSAPP, msg(text="", template=template), is_reply=False, last_inbound_at=None)
    check(MESSENGER, msg(message_tag="ACCOUNT_UPDATE"), last_inbound_at=NOW - timedelta(days=3))


def test_a_tag_does_not_open_a_template_window_and_vice_versa() -> None:
    with pytest.raises(NotAllowed, match="no message tags"):
        check(WHATSAPP, msg(message_tag="ACCOUNT_UPDATE"), last_inbound_at=None)
    with pytest.raises(NotAllowed, match="no provider templates"):
        check(MESSENGER, msg(template=TemplateRef(name="t")), last_inbound_at=None)
    with pytest.raises(NotAllowed, match="no provider templates"):
        check(SMS, msg(template=TemplateRef(name="t")))


def test_naive_times_are_read_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    check_outbound(
        WHATSAPP, msg(), is_reply=True, last_inbound_at=naive_now - timedelta(hours=2), now=NOW
    )
    with pytest.raises(NotAllowed):
        check_outbound(
            WHATSAPP, msg(), is_reply=True, last_inbound_at=NOW - timedelta(days=2), now=naive_now
        )


def test_text_over_the_channel_limit_is_refused() -> None:
    check(SMS, msg(text="x" * 1600))
    with pytest.raises(NotAllowed, match="1601 characters, this channel allows at most 1600"):
        check(SMS, msg(text="x" * 1601))


def test_empty_message_is_refused() -> None:
    with pytest.raises(NotAllowed, match="empty"):
        check(SMS, msg(text="  "))


def test_subject_cc_bcc_and_html_only_where_declared() -> None:
    rich = msg(subject="Re: order", cc=(Address.email("a@x.org"),), html="<p>hi</p>")
    check(EMAIL, rich)
    problems = outbound_problems(
        SMS, rich, is_reply=True, last_inbound_at=NOW - timedelta(hours=1), now=NOW
    )
    assert problems == [
        "this channel has no subject line",
        "this channel has no CC or BCC",
        "this channel sends plain text only, not HTML",
    ]
    with pytest.raises(NotAllowed, match="no CC or BCC"):
        check(SMS, msg(bcc=(Address.email("b@x.org"),)))


def image(name: str = "a.png", size: int = 10, content_type: str = "image/png") -> Attachment:
    return Attachment(filename=name, content_type=content_type, data=b"x" * size)


def test_attachments_on_a_channel_without_them_are_refused() -> None:
    with pytest.raises(NotAllowed, match="cannot send attachments"):
        check(SMS, msg(attachments=(image(),)))


def test_attachment_limits_count_size_and_type() -> None:
    check(WHATSAPP, msg(attachments=(image(size=100),)))
    with pytest.raises(NotAllowed, match="2 attachments, this channel sends at most 1"):
        check(WHATSAPP, msg(attachments=(image(), image("b.png"))))
    with pytest.raises(NotAllowed, match=re.escape("'big.png' is 101 bytes, the limit is 100")):
        check(WHATSAPP, msg(attachments=(image("big.png", size=101),)))
    with pytest.raises(
        NotAllowed, match=re.escape("'a.pdf' is application/pdf, this channel sends only")
    ):
        check(WHATSAPP, msg(attachments=(image("a.pdf", content_type="application/pdf"),)))
    # An attachment given by URL has no known size: the channel checks it when it fetches.
    by_url = Attachment(filename="u.png", content_type="image/png", url="https://x.test/u.png")
    check(WHATSAPP, msg(attachments=(by_url,)))


def test_every_problem_is_reported_at_once() -> None:
    message = msg(text="x" * 2000, subject="s", attachments=(image(),))
    with pytest.raises(NotAllowed) as info:
        check(SMS, message)
    text = str(info.value)
    assert "2000 characters" in text
    assert "no subject line" in text
    assert "cannot send attachments" in text


def test_attachment_only_message_is_not_empty() -> None:
    check(EMAIL, msg(text="", attachments=(image(),)))
