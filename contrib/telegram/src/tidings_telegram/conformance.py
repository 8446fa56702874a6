"""The Telegram channel's conformance suite: what ``tidings conformance telegram`` runs.

Shipped inside the package (entry point ``tidings.conformance``) so an installed channel
can prove itself where it is deployed; needs ``tidings-telegram[conformance]``. The samples
follow the Bot API documentation's Update, Message, PhotoSize, Document, File and error
shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

import pytest

from tidings import Account, Address, WebhookRequest
from tidings.testing.conformance import (
    BadSettings,
    ChannelConformance,
    ExpectedAttachment,
    ExpectedMessage,
    InboundSample,
    MalformedSample,
    SendScenario,
)
from tidings_telegram.channel import SECRET_HEADER, UPDATES_ENDPOINT

pytest_plugins = ["tidings.testing.conformance"]

TOKEN = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # noqa: S105 (the Bot API docs\' example)
SECRET = "tidings-conformance_secret-1"  # noqa: S105
API = f"https://api.telegram.org/bot{TOKEN}"
CHAT = 123456789
PHOTO_BYTES = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
PDF_BYTES = b"%PDF-1.7\n" + b"0" * 3000
LARGE_PHOTO_ID = "AgACAgIAAxkBAAIBlarge"
DOCUMENT_ID = "BQACAgIAAxkBAAIBdoc"


def user() -> dict[str, Any]:
    return {
        "id": CHAT,
        "is_bot": False,
        "first_name": "Anna",
        "last_name": "Nowak",
        "username": "anowak",
        "language_code": "pl",
    }


def chat() -> dict[str, Any]:
    return {
        "id": CHAT,
        "first_name": "Anna",
        "last_name": "Nowak",
        "username": "anowak",
        "type": "private",
    }


def update(update_id: int, **message: Any) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id - 700000,
            "from": user(),
            "chat": chat(),
            "date": 1741000000,
            **message,
        },
    }


def webhook(account: Account[Any], payload: Any) -> WebhookRequest:
    return WebhookRequest(
        url=account.webhook_url(UPDATES_ENDPOINT),
        endpoint=UPDATES_ENDPOINT,
        headers={"content-type": "application/json"},
        body=json.dumps(payload).encode(),
    )


def sent_message(message_id: int, text: str = "Hello from tidings") -> dict[str, Any]:
    return {
        "ok": True,
        "result": {
            "message_id": message_id,
            "from": {
                "id": 110201543,
                "is_bot": True,
                "first_name": "Support",
                "username": "acme_support_bot",
            },
            "chat": chat(),
            "date": 1741000100,
            "text": text,
        },
    }


def error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def serve_file(router: Any, file_id: str, path: str, content: bytes) -> None:
    """Arrange getFile and the download for one file, as the Bot API answers them."""
    router.post(f"{API}/getFile", json={"file_id": file_id}).respond(
        200,
        json={
            "ok": True,
            "result": {
                "file_id": file_id,
                "file_unique_id": file_id[-8:],
                "file_size": len(content),
                "file_path": path,
            },
        },
    )
    router.get(f"https://api.telegram.org/file/bot{TOKEN}/{path}").respond(200, content=content)


def multipart_files(request: Any) -> list[ExpectedAttachment]:
    """The files of a multipart/form-data request, read with the standard email parser."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    form = BytesParser(policy=default_policy).parsebytes(head + request.content)
    assert isinstance(form, EmailMessage)
    out = []
    for part in form.iter_parts():
        filename = part.get_filename()
        if filename:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(ExpectedAttachment(filename, part.get_content_type(), len(payload)))
    return out


class TestTelegramConformance(ChannelConformance):
    plugin = "telegram"
    channel_name = "telegram"
    signature_headers = (SECRET_HEADER,)
    signature_covers_body = False  # a shared secret token, not a signature of the body

    @pytest.fixture
    def account_settings(self) -> Mapping[str, Any]:
        return {"bot_token": TOKEN, "secret_token": SECRET}

    @pytest.fixture
    def bad_settings(self) -> Sequence[BadSettings]:
        return [
            BadSettings(
                "token without the bot id", {"bot_token": "AAHdqTcvCH1vGWJxfSe"}, "bot_token"
            ),
            BadSettings("secret with a space", {"secret_token": "not allowed"}, "secret_token"),
            BadSettings("secret too long", {"secret_token": "a" * 257}, "secret_token"),
            BadSettings(
                "download over 20 MB",
                {"max_download_bytes": 21 * 1024 * 1024},
                "max_download_bytes",
            ),
        ]

    @pytest.fixture
    def sign(self) -> Callable[[WebhookRequest], WebhookRequest]:
        def sign(request: WebhookRequest) -> WebhookRequest:
            return request.model_copy(
                update={"headers": {**request.headers, SECRET_HEADER: SECRET}}
            )

        return sign

    @pytest.fixture
    def inbound_samples(self, account: Account[Any]) -> Sequence[InboundSample]:
        key = f"handle:{CHAT}"
        photo = [
            {
                "file_id": "AgACAgIAAxkBAAIBsmall",
                "file_unique_id": "AQADsmall",
                "width": 90,
                "height": 67,
                "file_size": 1290,
            },
            {
                "file_id": LARGE_PHOTO_ID,
                "file_unique_id": "AQADlarge",
                "width": 1280,
                "height": 960,
                "file_size": len(PHOTO_BYTES),
            },
        ]
        document = {
            "file_name": "faktura.pdf",
            "mime_type": "application/pdf",
            "file_id": DOCUMENT_ID,
            "file_unique_id": "AgADdoc",
            "file_size": len(PDF_BYTES),
        }
        edited = {"update_id": 700104, "edited_message": update(700104, text="x")["message"]}
        return [
            InboundSample(
                "text",
                webhook(account, update(700101, text="Dzień dobry, gdzie paczka?")),
                (ExpectedMessage(key, f"{CHAT}:101", "Dzień dobry, gdzie paczka?"),),
            ),
            InboundSample(
                "photo with caption",
                webhook(account, update(700102, photo=photo, caption="zdjęcie")),
                (
                    ExpectedMessage(
                        key,
                        f"{CHAT}:102",
                        "zdjęcie",
                        attachments=(
                            ExpectedAttachment(
                                "photo_AQADlarge.jpg", "image/jpeg", len(PHOTO_BYTES)
                            ),
                        ),
                    ),
                ),
                arrange=lambda r: serve_file(r, LARGE_PHOTO_ID, "photos/file_7.jpg", PHOTO_BYTES),
            ),
            InboundSample(
                "document",
                webhook(account, update(700103, document=document)),
                (
                    ExpectedMessage(
                        key,
                        f"{CHAT}:103",
                        "",
                        attachments=(
                            ExpectedAttachment("faktura.pdf", "application/pdf", len(PDF_BYTES)),
                        ),
                    ),
                ),
                arrange=lambda r: serve_file(r, DOCUMENT_ID, "documents/file_3.pdf", PDF_BYTES),
            ),
            InboundSample("edited message (not a new message)", webhook(account, edited), ()),
        ]

    @pytest.fixture
    def malformed_samples(self, account: Account[Any]) -> Sequence[MalformedSample]:
        no_chat = update(700201, text="hi")
        del no_chat["message"]["chat"]
        return [
            MalformedSample("message without chat", webhook(account, no_chat)),
            MalformedSample("update_id not a number", webhook(account, {"update_id": "seven"})),
            MalformedSample(
                "message is a string", webhook(account, {"update_id": 1, "message": "hi"})
            ),
            MalformedSample("photo without file_id", webhook(account, update(700202, photo=[{}]))),
        ]

    @pytest.fixture
    def recipient(self) -> Address:
        return Address.handle(str(CHAT))

    @pytest.fixture
    def send_success(self) -> SendScenario:
        def arrange(router: Any) -> None:
            router.post(f"{API}/sendMessage").respond(200, json=sent_message(4711))
            router.post(f"{API}/sendDocument").respond(200, json=sent_message(4712))

        return SendScenario("sent", arrange, provider_id=f"{CHAT}:4711")

    @pytest.fixture
    def send_transient(self) -> Sequence[SendScenario]:
        def flood(router: Any) -> None:
            body = error(429, "Too Many Requests: retry after 35", retry_after=35)
            router.post(f"{API}/sendMessage").respond(429, json=body)

        def bad_gateway(router: Any) -> None:
            router.post(f"{API}/sendMessage").respond(502, html="<html>502 Bad Gateway</html>")

        def internal(router: Any) -> None:
            router.post(f"{API}/sendMessage").respond(500, json=error(500, "Internal Server Error"))

        return [
            SendScenario("flood control", flood, code="429", retry_after=35.0),
            SendScenario("bad gateway", bad_gateway, code="502"),
            SendScenario("internal error", internal, code="500"),
        ]

    @pytest.fixture
    def send_permanent(self) -> Sequence[SendScenario]:
        def not_found(router: Any) -> None:
            router.post(f"{API}/sendMessage").respond(
                400, json=error(400, "Bad Request: chat not found")
            )

        def blocked(router: Any) -> None:
            body = error(403, "Forbidden: bot was blocked by the user")
            router.post(f"{API}/sendMessage").respond(403, json=body)

        return [
            SendScenario("chat not found", not_found, code="400"),
            SendScenario("blocked by the user", blocked, code="403"),
        ]

    @pytest.fixture
    def sent_attachments(self) -> Callable[[Any], Sequence[ExpectedAttachment]]:
        def read(router: Any) -> list[ExpectedAttachment]:
            return [
                found
                for call in router.calls
                if call.request.url.path.endswith("/sendDocument")
                for found in multipart_files(call.request)
            ]

        return read
