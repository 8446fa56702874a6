"""Turning raw RFC 5322 bytes into tidings messages and delivery reports.

Real mail is often broken: undeclared or unknown charsets, unparseable dates, addresses
that are not addresses, missing Message-IDs. A mailbox is read in order, so one message we
cannot parse must never block the ones behind it: every step here has a fallback, and the
original bytes always travel along (``InboundMessage.source``) so an agent can open the
``.eml`` whatever we made of it.
"""

from __future__ import annotations

import functools
import hashlib
import html as html_lib
import logging
import mimetypes
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser, HeaderParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

import nh3

from tidings import (
    Address,
    Attachment,
    DeliveryStatus,
    InboundMessage,
    PolledItem,
    StatusUpdate,
    ThreadHeaders,
    map_status,
)

log = logging.getLogger("tidings_email_imap")

_MSGID = re.compile(r"<[^<>\s]{1,990}>")
_MAX_REFERENCES = 50
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|"
    r"automatische antwort|abwesenheitsnotiz|r[ée]ponse automatique|absence|"
    r"odpowied[źz] automatyczna|respuesta autom[áa]tica|risposta automatica|"
    r"vacation( reply)?|away from (the )?office|i am (currently )?out of)\b",
    re.IGNORECASE,
)

# DSN Action words (RFC 3464 §2.3.3) → our statuses. ``failed`` means the message left us
# (it was ``sent``) but could not be delivered; ``delayed`` says nothing final and maps to
# ``unknown`` (rank 0), which can never move a message backwards.
DSN_ACTIONS = {
    "failed": DeliveryStatus.UNDELIVERED,
    "delayed": DeliveryStatus.UNKNOWN,
    "delivered": DeliveryStatus.DELIVERED,
    "expanded": DeliveryStatus.DELIVERED,
    "relayed": DeliveryStatus.SENT,
}

# HTML kept for display: ammonia's safe defaults plus what email layouts need (inline styles
# filtered to harmless properties, table presentation attributes) and cid: URLs so inline
# images still point at their attachment.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "line-height", "margin", "margin-top",
    "margin-bottom", "margin-left", "margin-right", "padding", "padding-top",
    "padding-bottom", "padding-left", "padding-right", "border", "border-collapse",
    "width", "height", "vertical-align", "white-space", "list-style-type",
}  # fmt: skip
_PRESENTATION = {"align", "valign", "width", "height", "bgcolor", "border", "cellpadding",
                 "cellspacing", "colspan", "rowspan", "style", "dir"}  # fmt: skip
_HTML_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()
}
for _tag in (
    "table",
    "tr",
    "td",
    "th",
    "tbody",
    "thead",
    "div",
    "p",
    "span",
    "img",
    "font",
    "center",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "blockquote",
):
    _HTML_ATTRIBUTES.setdefault(_tag, set()).update(_PRESENTATION)  # fmt: skip
_HTML_ATTRIBUTES["font"].update({"color", "face", "size"})
_HTML_ATTRIBUTES["img"].update({"alt", "title"})
_HTML_TAGS = set(nh3.ALLOWED_TAGS) | {"font"}
_URL_SCHEMES = set(nh3.ALLOWED_URL_SCHEMES) | {"cid"}


# Built once: ``nh3.clean`` turns these sets into ammonia's settings on every call, which
# was more than half of the time of sanitising a typical message (435 → 191 µs).
_CLEANER = nh3.Cleaner(
    tags=_HTML_TAGS,
    clean_content_tags={"script", "style", "title", "head"},
    attributes=_HTML_ATTRIBUTES,
    url_schemes=_URL_SCHEMES,
    filter_style_properties=_STYLE_PROPERTIES,
    link_rel="noopener noreferrer",
)


def sanitize_html(markup: str) -> str:
    """HTML safe to show in the agent UI: no scripts, handlers, forms or foreign schemes."""
    return _CLEANER.clean(markup)


class _TextFromHtml(HTMLParser):
    _BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
                        "blockquote", "table", "ul", "ol", "hr", "pre"})  # fmt: skip
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def text_from_html(markup: str) -> str:
    """Readable plain text from HTML-only mail (for previews, search and SMS-like views)."""
    parser = _TextFromHtml()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError):  # pathological markup: fall back to tag stripping
        return html_lib.unescape(re.sub(r"<[^>]*>", " ", markup)).strip()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# -- headers --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _parsed_header(name: str, value: str) -> Any:
    return policy.default.header_fetch_parse(name, value)


class _ReadPolicy(EmailPolicy):
    """``policy.default`` whose parsed header objects are remembered.

    The default policy keeps headers as text and runs the header registry's parser on every
    access, and reading one message asks for Content-Type and friends dozens of times (each
    ``get_content_type``, ``get_body`` step and attachment check): that re-parsing was most
    of a mailbox sync's parsing time. Header objects are immutable, and the values that
    repeat across messages (content types, dispositions) are shared through the cache.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        return _parsed_header(name, value)


READ_POLICY = _ReadPolicy()


def split_head(raw: bytes) -> bytes:
    """The header block of ``raw`` (up to the first empty line), without parsing the body."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(sep)
        if index != -1:
            return raw[: index + len(sep)]
    return raw


def parse_headers(raw: bytes) -> EmailMessage:
    """Only the headers: the cheap look that decides whether a message is a bounce."""
    parsed = BytesHeaderParser(policy=READ_POLICY).parsebytes(split_head(raw))
    assert isinstance(parsed, EmailMessage)
    return parsed


def header(msg: Message, name: str) -> str | None:
    """A header as text (RFC 2047 decoded), tolerating values the parser chokes on."""
    try:
        value = msg.get(name)
        if value is None:
            return None
        return _one_line(str(value))
    except Exception:  # broken encoded words, bad dates: read the raw value instead
        for key, raw in msg.raw_items():
            if key.lower() == name.lower():
                return _one_line(_decode_words(str(raw)))
        return None


def raw_header(msg: Message, name: str) -> str | None:
    """A header's text as it came (unfolded), for message ids, dates and tokens.

    The header registry parses such values into structures we do not use (a message id's
    parse tree, a date re-formatted from the datetime) and that is most of what parsing
    a message costs: these values are unique per message, so no cache helps. They are
    never RFC 2047 encoded, and what we take from them (ids by pattern, the date by
    ``parsedate_to_datetime``) is the same from the raw text.
    """
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            text = str(value)
            if not text.isascii():  # 8-bit bytes arrive as surrogates: read them as UTF-8
                text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return _one_line(text)
    return None


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError):
        return value.encode("ascii", "replace").decode("ascii")


def _one_line(value: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", value).strip()


def is_dsn(headers: Message) -> bool:
    """A delivery status notification (RFC 3464): ``multipart/report; report-type=…status``."""
    try:
        if headers.get_content_type() != "multipart/report":
            return False
        report_type = headers.get_param("report-type")
    except Exception:
        return False
    return isinstance(report_type, str) and report_type.lower() == "delivery-status"


def is_dsn_source(raw: bytes) -> bool:
    """``is_dsn`` of raw bytes, cheap for the ordinary mail that is nearly all of a mailbox.

    ``receive`` and ``delivery_status`` both ask this of every message of a batch: a header
    block whose bytes never say ``report`` cannot be ``multipart/report`` (the media type is
    a token, never encoded or folded), so only the rest is parsed.
    """
    head = split_head(raw)
    if b"report" not in head.lower():
        return False
    return is_dsn(parse_headers(head))


def message_ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(_MSGID.findall(value))


def _message_id(msg: Message) -> str | None:
    value = raw_header(msg, "Message-ID")
    if not value:
        return None
    found = _MSGID.findall(value)
    if found:
        return str(found[0])
    cleaned = value.strip().strip("<>").strip()
    if cleaned and not re.search(r"\s", cleaned) and len(cleaned) < 990:
        return f"<{cleaned}>"
    return None


def synthetic_id(account_id: str, raw: bytes) -> str:
    """An id for mail without a Message-ID: a content hash, so it is the same after a
    UIDVALIDITY resync or a redelivery of the same bytes (UIDs would change)."""
    digest = hashlib.sha256(account_id.encode() + b"\x00" + raw).hexdigest()[:40]
    return f"<{digest}@no-message-id.invalid>"


# One mailbox as most mail writes it: ``addr@example.org``, ``<addr@example.org>`` or
# ``Plain Name <addr@example.org>`` — ASCII atoms and single spaces, nothing to unquote or
# decode (RFC 5322 §3.2.3, §3.4).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_PLAIN_MAILBOX = re.compile(
    rf"(?:(?:(?P<name>{_ATOM}(?: {_ATOM})*) ?)?<(?P<angle>{_DOT_ATOM}@{_DOT_ATOM})>"
    rf"|(?P<bare>{_DOT_ATOM}@{_DOT_ATOM}))"
)


def plain_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """(display name, addr-spec) of an address list made of plain mailboxes only, or None
    when anything needs the full parser (quotes, comments, groups, encoded words, 8-bit).

    The header registry's parser builds a token tree for every mailbox, a fifth of the
    time parsing a message takes, and sender headers hardly repeat, so caching does not
    help. For the plain form the answer is the text itself, the same as the registry's.
    """
    if "=?" in value or not value.isascii():
        return None
    pairs = []
    for part in value.split(","):
        match = _PLAIN_MAILBOX.fullmatch(part.strip())
        if match is None:
            return None
        pairs.append((match["name"] or "", match["angle"] or match["bare"]))
    return pairs


def addresses(msg: Message, name: str) -> list[Address]:
    """The valid mailboxes of an address header; invalid entries are skipped, never fatal."""
    out: list[Address] = []
    pairs: list[tuple[str, str]] = []
    value = raw_header(msg, name)
    if value is None:
        return []
    plain = plain_mailboxes(value)
    if plain is not None:
        pairs = plain
    else:
        try:
            groups = getattr(msg.get(name), "addresses", None)
            if groups is None:
                raise ValueError("not an address header")
            pairs = [(a.display_name, a.addr_spec) for a in groups]
        except Exception:
            raw = [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
            pairs = [(_decode_words(n), a) for n, a in getaddresses(raw)]
    for display, addr in pairs:
        try:
            out.append(Address.email(addr, name=_one_line(display)[:300] or None))
        except ValueError:
            continue
    return out


def _sent_at(msg: Message, internaldate: str | None) -> datetime | None:
    for value in (raw_header(msg, "Date"), internaldate):
        if not value:
            continue
        try:
            return parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            try:
                return datetime.strptime(value, "%d-%b-%Y %H:%M:%S %z")
            except ValueError:
                continue
    return None


def is_auto_reply(msg: Message) -> bool:
    """Out-of-office and other machine answers (RFC 3834 and the common vendor headers)."""
    auto_submitted = (raw_header(msg, "Auto-Submitted") or "").lower()
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return True
    if raw_header(msg, "X-Autoreply") or raw_header(msg, "X-Autorespond"):
        return True
    precedence = (raw_header(msg, "Precedence") or "").lower()
    if precedence in ("bulk", "auto_reply", "junk"):
        return True
    return bool(_AUTO_SUBJECT.match(header(msg, "Subject") or ""))


# -- bodies and attachments -----------------------------------------------------------------


def part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def part_text(part: Message) -> str:
    """Decode a text part: declared charset, then UTF-8, then Windows-1252 (never fails)."""
    data = part_bytes(part)
    charsets = []
    declared = part.get_content_charset()
    if declared:
        charsets.append(declared)
    charsets += ["utf-8", "cp1252"]
    for charset in charsets:
        try:
            return _lines(data.decode(charset))
        except (LookupError, UnicodeDecodeError):
            continue
    return _lines(data.decode("latin-1"))


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        try:
            name = part.get_param("name")  # type: ignore[assignment]
        except Exception:
            name = None
        if isinstance(name, tuple):  # RFC 2231 triple from the compat API
            name = str(name[2])
    if not isinstance(name, str) or not name.strip():
        return None
    if "=?" in name:  # RFC 2047 inside a parameter: wrong, but what many mailers send
        name = _decode_words(name)
    return _one_line(name)


def _default_name(content_type: str, index: int) -> str:
    if content_type == "text/calendar":
        return "invite.ics"
    ext = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment-{index}{ext}"


def _walk_leaves(part: Message) -> Iterator[Message]:
    """Leaf parts in order; a forwarded message (message/rfc822) is one leaf, not opened."""
    if part.get_content_maintype() == "message":  # rfc822, delivery-status, …: one leaf
        yield part
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _walk_leaves(sub)
        return
    yield part


def _body_part(msg: EmailMessage, kind: str) -> Message | None:
    try:
        part = msg.get_body(preferencelist=(kind,))
    except Exception:
        return None
    if part is None or part.get_content_type() != f"text/{kind}":
        return None
    if (part.get_content_disposition() or "") == "attachment":
        return None
    return part


def _forwarded_bytes(part: Message) -> tuple[bytes, str | None]:
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    if isinstance(inner, Message):
        try:
            data = inner.as_bytes(policy=policy.SMTP)
        except Exception:
            data = inner.as_bytes(policy=policy.compat32.clone(linesep="\r\n"))
        return data, header(inner, "Subject")
    return part_bytes(part), None


def attachments_of(msg: EmailMessage, skip: Iterable[Message]) -> list[Attachment]:
    """Every leaf that is not one of the chosen bodies, as an ``Attachment`` with bytes."""
    skipped = {id(p) for p in skip}
    out: list[Attachment] = []
    for index, part in enumerate(_walk_leaves(msg), start=1):
        if id(part) in skipped:
            continue
        content_type = part.get_content_type()
        name = _filename(part)
        disposition = part.get_content_disposition()
        if content_type == "message/rfc822":
            data, subject = _forwarded_bytes(part)
            name = name or f"{(subject or 'forwarded message')[:100]}.eml"
        elif part.get_content_maintype() == "message":
            data = part.as_bytes(policy=policy.SMTP)
        else:
            if content_type in ("text/plain", "text/html") and not name and disposition is None:
                # An extra inline text part (e.g. the text after an inline image) is body,
                # not a file; it is kept in ``source`` and appended to the text below.
                continue
            data = part_bytes(part)
        content_id = raw_header(part, "Content-ID")
        out.append(
            Attachment(
                filename=name or _default_name(content_type, index),
                content_type=content_type,
                data=data,
                inline=disposition == "inline" or (disposition is None and bool(content_id)),
                content_id=content_id.strip().strip("<>")[:300] if content_id else None,
            )
        )
    return out


def _extra_texts(msg: EmailMessage, skip: Iterable[Message]) -> list[str]:
    skipped = {id(p) for p in skip}
    texts = []
    for part in _walk_leaves(msg):
        if id(part) in skipped or part.get_content_type() != "text/plain":
            continue
        if _filename(part) or part.get_content_disposition() is not None:
            continue
        texts.append(part_text(part))
    return texts


# -- the whole message ----------------------------------------------------------------------


def parse_message(
    raw: bytes, *, account_id: str, meta: Mapping[str, Any] | None = None
) -> InboundMessage:
    """One inbound message from raw bytes; never raises for content problems."""
    meta = dict(meta or {})
    parsed = BytesParser(policy=READ_POLICY).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    msg = parsed

    senders = addresses(msg, "From") or addresses(msg, "Sender") or addresses(msg, "Reply-To")
    if not senders:
        senders = addresses(msg, "Return-Path")
    sender = (
        senders[0] if senders else Address.handle((header(msg, "From") or "unknown sender")[:300])
    )

    plain = _body_part(msg, "plain")
    rich = _body_part(msg, "html")
    if not msg.is_multipart() and msg.get_content_maintype() != "text":
        plain = rich = None  # a single non-text part is an attachment, not a body
    text = part_text(plain) if plain is not None else ""
    html = part_text(rich) if rich is not None else None
    if not text and html:
        text = text_from_html(html)
    extra = _extra_texts(msg, [p for p in (plain, rich) if p is not None])
    if extra:
        text = "\n\n".join([text, *extra]) if text else "\n\n".join(extra)

    message_id = _message_id(msg)
    provider_id = message_id or synthetic_id(account_id, raw)
    references = message_ids(raw_header(msg, "References"))[-_MAX_REFERENCES:]
    extras: dict[str, Any] = {**meta}
    reply_to = addresses(msg, "Reply-To")
    if reply_to:
        extras["reply_to"] = [a.value for a in reply_to]
    list_id = header(msg, "List-Id")
    if list_id:
        extras["list_id"] = list_id[:300]
    if message_id is None:
        extras["synthetic_id"] = True

    sent_at = _sent_at(msg, meta.get("internaldate"))
    subject = header(msg, "Subject")
    return InboundMessage(
        provider_id=provider_id,
        sender=sender,
        recipients=tuple(addresses(msg, "To")),
        cc=tuple(addresses(msg, "Cc")),
        subject=subject[:998] if subject is not None else None,
        text=text,
        html=sanitize_html(html) if html else None,
        attachments=tuple(attachments_of(msg, [p for p in (plain, rich) if p is not None])),
        thread=ThreadHeaders(
            message_id=provider_id,
            in_reply_to=message_ids(raw_header(msg, "In-Reply-To"))[:5],
            references=references,
        ),
        auto_reply=is_auto_reply(msg),
        meta=extras,
        source=raw,
        **({"sent_at": sent_at} if sent_at is not None else {}),
    )


def read_items(account_id: str, items: Sequence[PolledItem]) -> list[InboundMessage]:
    """The messages of a batch's items, bounces left out (``parse_dsn`` reads those).

    Never raises for content: a message the stdlib cannot read at all must neither block
    the mailbox nor vanish, so it becomes an :func:`unreadable_message` (its ``meta``
    says why) for an agent to open. Module-level and free of state so a worker process
    can run it (``channel._ParseWorker``); its arguments and result pickle.
    """
    out: list[InboundMessage] = []
    for item in items:
        if is_dsn_source(item.data):
            continue  # a bounce: delivery_status reports it
        try:
            out.append(parse_message(item.data, account_id=account_id, meta=item.meta))
        except Exception as exc:
            out.append(unreadable_message(item.data, account_id=account_id, meta=item.meta,
                                          error=exc))  # fmt: skip
    return out


# -- delivery status notifications ----------------------------------------------------------


def _dsn_fields(block: Message) -> dict[str, str]:
    out = {}
    for key, value in block.items():
        out[key.lower()] = _one_line(str(value))
    return out


def _status_blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [_dsn_fields(b) for b in payload if isinstance(b, Message)]
    text = part_text(part) if isinstance(payload, str) else ""
    blocks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [_dsn_fields(HeaderParser(policy=policy.default).parsestr(b)) for b in blocks if b]


def _original_message_id(report: Message, fields: list[dict[str, str]]) -> str | None:
    for part in _walk_leaves(report):
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found = _message_id(payload[0])
                if found:
                    return found
        elif content_type == "text/rfc822-headers":
            headers = HeaderParser(policy=policy.default).parsestr(part_text(part))
            found = _message_id(headers)
            if found:
                return found
    for block in fields:
        ids = message_ids(block.get("original-message-id"))
        if ids:
            return ids[0]
    return None


def parse_dsn(raw: bytes) -> list[StatusUpdate]:
    """One ``StatusUpdate`` per recipient the bounce reports, keyed by our Message-ID.

    A report whose original Message-ID cannot be found is logged and yields nothing:
    there is no message to attach it to.
    """
    report = BytesParser(policy=READ_POLICY).parsebytes(raw)
    blocks: list[dict[str, str]] = []
    for part in _walk_leaves(report):
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _status_blocks(part)
            break
    original = _original_message_id(report, blocks)
    if original is None:
        log.warning("delivery report without the original Message-ID: ignored")
        return []
    recipients = [b for b in blocks if "action" in b or "status" in b]
    occurred = _sent_at(report, None)
    updates = []
    for block in recipients:
        action = (block.get("action") or "").lower() or None
        status_code = block.get("status", "").split()[0] if block.get("status") else None
        status = map_status(action, DSN_ACTIONS)
        if action is None and status_code and status_code.startswith("5."):
            status = DeliveryStatus.UNDELIVERED
        recipient = block.get("final-recipient") or block.get("original-recipient")
        if recipient and ";" in recipient:
            recipient = recipient.split(";", 1)[1].strip()
        diagnostic = block.get("diagnostic-code")
        if diagnostic and ";" in diagnostic:
            diagnostic = diagnostic.split(";", 1)[1].strip()
        updates.append(
            StatusUpdate(
                provider_id=original[:300],
                status=status,
                raw_status=action[:100] if action else None,
                error_code=status_code[:100] if status_code else None,
                error_message=diagnostic[:2000] if diagnostic else None,
                occurred_at=occurred,
                raw={"recipient": recipient, "reporting_mta": blocks[0].get("reporting-mta")}
                if blocks
                else None,
            )
        )
    return updates


def unreadable_message(
    raw: bytes, *, account_id: str, meta: Mapping[str, Any] | None, error: Exception
) -> InboundMessage:
    """What an agent gets for bytes the parser gave up on: the source, kept and findable."""
    return InboundMessage(
        provider_id=synthetic_id(account_id, raw),
        sender=Address.handle("unknown sender"),
        text="(this message could not be read; open its source)",
        meta={**(meta or {}), "parse_error": f"{type(error).__name__}: {error}"[:300]},
        source=raw,
    )
