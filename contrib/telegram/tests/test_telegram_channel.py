"""What the conformance suite cannot know about Telegram: file limits, captions, secrets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
import typer

from tidings import (
    Account,
    Address,
    Attachment,
    OutboundMessage,
    PermanentSendError,
    SignatureError,
    TransientSendError,
    WebhookRequest,
)
from tidings.plugins import load_plugins
from tidings_telegram import register_commands
from tidings_telegram.channel import TelegramChannel, TelegramSettings, set_webhook
from tidings_telegram.conformance import (
    API,
    CHAT,
    SECRET,
    TOKEN,
    error,
    multipart_files,
    sent_message,
    update,
)


def account(**settings: Any) -> Account[TelegramSettings]:
    values = {"bot_token": TOKEN, "secret_token": SECRET, **settings}
    return Account[TelegramSettings](
        id="tg",
        channel="telegram",
        project="p",
        settings=TelegramSettings.model_validate(values),
        public_url="https://tidings.example",
    )


def request(payload: Any, secret: str | None = SECRET) -> WebhookRequest:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    return WebhookRequest(
        url="https://tidings.example/webhooks/tg/updates",
        endpoint="updates",
        headers=headers,
        body=json.dumps(payload).encode(),
    )


def to_chat(text: str = "hi", **fields: Any) -> OutboundMessage:
    return OutboundMessage(id="m1", to=(Address.handle(str(CHAT)),), text=text, **fields)


@pytest.mark.anyio
async def test_secret_token_must_match_exactly() -> None:
    channel = TelegramChannel()
    payload = update(700001, text="hi")
    for wrong in (SECRET.upper(), SECRET + "x", SECRET[:-1], ""):
        with pytest.raises(SignatureError):
            await channel.receive(account(), request(payload, wrong))
    (msg,) = await channel.receive(account(), request(payload))
    assert msg.sender.name == "Anna Nowak"
    assert msg.meta["username"] == "anowak"
    assert msg.sent_at.timestamp() == 1741000000


@pytest.mark.anyio
async def test_file_over_the_limit_is_listed_not_downloaded() -> None:
    document = {"file_id": "BQ1", "file_unique_id": "u1", "file_name": "big.zip",
                "mime_type": "application/zip", "file_size": 5000}  # fmt: skip
    with respx.mock(assert_all_mocked=True):  # any Bot API call would fail the test
        (msg,) = await TelegramChannel().receive(
            account(max_download_bytes=4096), request(update(700002, document=document))
        )
    assert msg.attachments == ()
    assert msg.meta["skipped_attachments"] == [
        {"filename": "big.zip", "size": 5000,
         "reason": "5000 bytes is over the 4096-byte download limit"}
    ]  # fmt: skip


@pytest.mark.anyio
async def test_download_without_a_declared_size_stops_at_the_limit() -> None:
    document = {"file_id": "BQ2", "file_unique_id": "u2", "file_name": "x.bin"}
    with respx.mock() as router:
        router.post(f"{API}/getFile").respond(
            200, json={"ok": True, "result": {"file_id": "BQ2", "file_unique_id": "u2",
                                              "file_path": "documents/x.bin"}}
        )  # fmt: skip
        router.get(f"https://api.telegram.org/file/bot{TOKEN}/documents/x.bin").respond(
            200, content=b"x" * 10_000
        )
        (msg,) = await TelegramChannel().receive(
            account(max_download_bytes=4096), request(update(700003, document=document))
        )
    assert msg.attachments == ()
    assert msg.meta["skipped_attachments"][0]["reason"] == "over the 4096-byte download limit"


@pytest.mark.anyio
async def test_expired_file_is_listed_with_telegrams_reason() -> None:
    photo = [{"file_id": "AgX", "file_unique_id": "ux", "width": 1, "height": 1}]
    with respx.mock() as router:
        router.post(f"{API}/getFile").respond(
            400,
            json=error(400, "Bad Request: wrong file_id or the file is temporarily unavailable"),
        )
        (msg,) = await TelegramChannel().receive(account(), request(update(700004, photo=photo)))
    assert msg.meta["skipped_attachments"][0]["reason"].startswith("getFile: Bad Request")


@pytest.mark.anyio
async def test_long_caption_goes_first_as_a_message() -> None:
    file = Attachment(filename="a.pdf", content_type="application/pdf", data=b"%PDF" * 10)
    with respx.mock() as router:
        text_route = router.post(f"{API}/sendMessage").respond(200, json=sent_message(1))
        doc_route = router.post(f"{API}/sendDocument").respond(200, json=sent_message(2))
        result = await TelegramChannel().send(account(), to_chat("x" * 1500, attachments=(file,)))
    assert json.loads(text_route.calls.last.request.content) == {
        "chat_id": str(CHAT), "text": "x" * 1500
    }  # fmt: skip
    assert b'name="caption"' not in doc_route.calls.last.request.content
    assert multipart_files(doc_route.calls.last.request)[0].filename == "a.pdf"
    assert result.provider_id == f"{CHAT}:2"


@pytest.mark.anyio
async def test_attachment_by_url_is_fetched_by_telegram() -> None:
    file = Attachment(filename="a.pdf", content_type="application/pdf", url="https://x.test/a.pdf")
    with respx.mock() as router:
        route = router.post(f"{API}/sendDocument").respond(200, json=sent_message(3))
        await TelegramChannel().send(account(), to_chat("see", attachments=(file,)))
    assert json.loads(route.calls.last.request.content) == {
        "chat_id": str(CHAT), "caption": "see", "document": "https://x.test/a.pdf"
    }  # fmt: skip


@pytest.mark.anyio
async def test_the_bot_token_never_appears_in_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    channel = TelegramChannel(transport=httpx.MockTransport(refuse))
    with pytest.raises(TransientSendError) as info:
        await channel.send(account(), to_chat())
    assert TOKEN not in str(info.value)
    assert TOKEN.split(":")[1] not in repr(account())


@pytest.mark.anyio
async def test_only_chat_ids_are_addressable() -> None:
    with pytest.raises(PermanentSendError) as info:
        await TelegramChannel().send(account(), to_chat().model_copy(
            update={"to": (Address.phone("+48600100200"),)}
        ))  # fmt: skip
    assert info.value.code == "bad_address"


@pytest.mark.anyio
async def test_set_webhook_registers_url_and_secret() -> None:
    seen: list[httpx.Request] = []

    def bot_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"ok": True, "result": True, "description": "Webhook was set"}
        )

    url = await set_webhook(account(), transport=httpx.MockTransport(bot_api))
    assert url == "https://tidings.example/webhooks/tg/updates"
    (call,) = seen
    assert str(call.url) == f"{API}/setWebhook"
    assert json.loads(call.content) == {
        "url": url, "secret_token": SECRET, "allowed_updates": ["message"],
        "drop_pending_updates": False,
    }  # fmt: skip


def test_plugin_adds_the_telegram_command() -> None:
    cli = typer.Typer()
    register_commands(cli)
    (group,) = cli.registered_groups
    assert group.name == "telegram"
    assert [c.name for c in group.typer_instance.registered_commands] == ["set-webhook"]


def test_registered_through_the_entry_point() -> None:
    handle = load_plugins({"TIDINGS_PLUGINS": "telegram"}).channel("telegram")
    assert isinstance(handle.channel, TelegramChannel)
    assert handle.implemented == {"receive", "send"}
