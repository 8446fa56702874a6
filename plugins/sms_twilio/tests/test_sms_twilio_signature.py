"""X-Twilio-Signature: Twilio's published example, computed examples, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest
from sms_twilio_samples import (
    AUTH_TOKEN,
    DOC_EXAMPLE_PARAMS,
    DOC_EXAMPLE_SIGNATURE,
    DOC_EXAMPLE_TOKEN,
    DOC_EXAMPLE_URL,
    account,
    inbound_sms,
    signed_request,
    twilio_signature,
)

from tidings import SignatureError, WebhookRequest
from tidings_sms_twilio.signature import compute_signature, url_variants, verify


def test_twilios_published_example() -> None:
    assert compute_signature(DOC_EXAMPLE_TOKEN, DOC_EXAMPLE_URL, DOC_EXAMPLE_PARAMS.items()) == (
        DOC_EXAMPLE_SIGNATURE
    )
    # The independent implementation in the samples agrees with the published value too.
    assert twilio_signature(DOC_EXAMPLE_TOKEN, DOC_EXAMPLE_URL, DOC_EXAMPLE_PARAMS.items()) == (
        DOC_EXAMPLE_SIGNATURE
    )


def test_published_example_as_a_request_with_params_in_any_order() -> None:
    body = urlencode(list(reversed(DOC_EXAMPLE_PARAMS.items()))).encode()
    request = WebhookRequest(
        url=DOC_EXAMPLE_URL,
        endpoint="inbound",
        headers={"x-twilio-signature": DOC_EXAMPLE_SIGNATURE},
        body=body,
    )
    verify(DOC_EXAMPLE_TOKEN, request)
    tampered = request.model_copy(update={"body": body.replace(b"1234", b"9999")})
    with pytest.raises(SignatureError):
        verify(DOC_EXAMPLE_TOKEN, tampered)
    other_query = request.model_copy(update={"url": DOC_EXAMPLE_URL.replace("bar=2", "bar=3")})
    with pytest.raises(SignatureError):
        verify(DOC_EXAMPLE_TOKEN, other_query)
    with pytest.raises(SignatureError):
        verify("54321", request)


def test_repeated_names_sort_their_values() -> None:
    params = [("MediaUrl", "https://b.example/2"), ("Body", "x"), ("MediaUrl", "https://a/1")]
    expected_data = "https://h.example/hookBodyxMediaUrlhttps://a/1MediaUrlhttps://b.example/2"
    expected = base64.b64encode(
        hmac.new(b"tok", expected_data.encode(), hashlib.sha1).digest()
    ).decode()
    assert compute_signature("tok", "https://h.example/hook", params) == expected


def test_non_ascii_values_are_signed_as_utf8() -> None:
    params = [("Body", "Zażółć gęślą jaźń 😀")]
    acct = account()
    request = signed_request(acct, "inbound", params)
    verify(AUTH_TOKEN, request)


@pytest.mark.parametrize(
    ("received", "signed"),
    [
        ("https://t.example/webhooks/a/inbound", "https://t.example:443/webhooks/a/inbound"),
        ("https://t.example:443/webhooks/a/inbound", "https://t.example/webhooks/a/inbound"),
        ("http://t.example/webhooks/a/inbound?x=1", "http://t.example:80/webhooks/a/inbound?x=1"),
        ("http://t.example:80/webhooks/a/inbound", "http://t.example/webhooks/a/inbound"),
        ("https://t.example/webhooks/a/inbound", "https://t.example/webhooks/a/inbound"),
    ],
)
def test_default_port_spelled_or_not(received: str, signed: str) -> None:
    request = signed_request(account(), "inbound", inbound_sms(), url=received, sign_url=signed)
    verify(AUTH_TOKEN, request)


def test_a_non_default_port_is_not_interchangeable() -> None:
    assert url_variants("https://t.example:8443/x") == ["https://t.example:8443/x"]
    request = signed_request(
        account(),
        "inbound",
        inbound_sms(),
        url="https://t.example:8443/x",
        sign_url="https://t.example/x",
    )
    with pytest.raises(SignatureError):
        verify(AUTH_TOKEN, request)


def test_missing_empty_and_wrong_signatures() -> None:
    acct = account()
    with pytest.raises(SignatureError, match="missing"):
        verify(AUTH_TOKEN, signed_request(acct, "inbound", inbound_sms(), signature=""))
    with pytest.raises(SignatureError):
        verify(AUTH_TOKEN, signed_request(acct, "inbound", inbound_sms(), signature="AAAA"))
    with pytest.raises(SignatureError):
        verify(AUTH_TOKEN, signed_request(acct, "inbound", inbound_sms(), signature="zz\u00e9"))
    with pytest.raises(SignatureError):
        verify(AUTH_TOKEN, signed_request(acct, "inbound", inbound_sms(), token="other-token"))


def test_an_unparseable_body_cannot_be_verified() -> None:
    request = WebhookRequest(
        url="https://t.example/x",
        endpoint="inbound",
        headers={"x-twilio-signature": "AAAA"},
        body=b"\xff\xfe not a form",
    )
    with pytest.raises(SignatureError, match="not a form"):
        verify(AUTH_TOKEN, request)


def test_json_body_with_body_sha256() -> None:
    body = json.dumps({"MessageSid": "SM1", "MessageStatus": "sent"}).encode()
    digest = hashlib.sha256(body).hexdigest()
    url = f"https://t.example/webhooks/a/status?bodySHA256={digest}"
    request = WebhookRequest(
        url=url,
        endpoint="status",
        headers={
            "content-type": "application/json",
            "x-twilio-signature": twilio_signature(AUTH_TOKEN, url),
        },
        body=body,
    )
    verify(AUTH_TOKEN, request)
    changed = request.model_copy(update={"body": body.replace(b"sent", b"read")})
    with pytest.raises(SignatureError, match="bodySHA256"):
        verify(AUTH_TOKEN, changed)
    no_hash = request.model_copy(update={"url": "https://t.example/webhooks/a/status"})
    with pytest.raises(SignatureError):
        verify(AUTH_TOKEN, no_hash)
