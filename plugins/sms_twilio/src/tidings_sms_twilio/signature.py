"""``X-Twilio-Signature``: Twilio's documented request-signing algorithm.

Twilio signs the URL it called (query string included, exactly as configured) followed by
every POST parameter as name+value, names sorted and a repeated name's values sorted, with
HMAC-SHA1 keyed by the account's auth token, base64-encoded. JSON bodies are not part of the
signed string: Twilio adds a ``bodySHA256`` query parameter (hex SHA-256 of the raw body)
instead, so the URL alone is signed and the body is checked against that hash.

Proxies and frameworks disagree about writing the default port (``https://h:443/x`` vs
``https://h/x``), and Twilio's own validators accept both spellings, so we do too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tidings import MalformedPayload, SignatureError, WebhookRequest

HEADER = "x-twilio-signature"
_DEFAULT_PORTS = {"https": 443, "http": 80}


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The base64 HMAC-SHA1 Twilio would send for a request to ``url`` with ``params``."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with the default port added or removed."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    variants = [url]
    if default is None or parts.hostname is None:
        return variants
    userinfo, _, _ = parts.netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return variants
    if port is None:
        netloc = f"{prefix}{host}:{default}"
    elif port == default:
        netloc = f"{prefix}{host}"
    else:
        return variants
    variants.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    return variants


def _matches(auth_token: str, given: str, url: str, params: list[tuple[str, str]]) -> bool:
    ok = False
    for candidate in url_variants(url):
        expected = compute_signature(auth_token, candidate, params)
        # Evaluate every variant: the time taken does not depend on which one matched.
        ok |= hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))
    return ok


def is_json(request: WebhookRequest) -> bool:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
    return content_type == "application/json" or "bodySHA256" in query


def signed_params(request: WebhookRequest) -> list[tuple[str, str]]:
    """The parameters Twilio put into the signature: the form of a form POST, else none."""
    if request.method.upper() != "POST" or is_json(request):
        return []
    try:
        return request.form()
    except MalformedPayload:
        # Twilio only ever signs well-formed forms: an unparseable body cannot be genuine.
        raise SignatureError("cannot verify X-Twilio-Signature: the body is not a form") from None


def verify(auth_token: str, request: WebhookRequest) -> None:
    """Raise ``SignatureError`` unless ``request`` carries Twilio's signature for it."""
    given = request.header(HEADER)
    if not given:
        raise SignatureError("missing X-Twilio-Signature header")
    if is_json(request):
        query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        claimed = query.get("bodySHA256", "")
        actual = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(claimed.lower().encode(), actual.encode()):
            raise SignatureError("bodySHA256 does not match the request body")
        params: list[tuple[str, str]] = []
    else:
        params = signed_params(request)
    if not _matches(auth_token, given.strip(), request.url, params):
        raise SignatureError("X-Twilio-Signature does not match this URL and body")
