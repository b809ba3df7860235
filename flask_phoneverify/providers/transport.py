"""What the HTTP providers share: an httpx client per app, one way to send a
request that turns every transport failure into a ProviderError, and safe XML.

Provider XML is hostile input: it is parsed with defusedxml (no DTDs, no
entities, no external references) and size-limited; XML we send is built with
ElementTree so no value can change the document's structure.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # noqa: S405 - building only; parsing goes through defusedxml
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException

from ..errors import ProviderConfigError, ProviderProtocolError, ProviderUnavailable

__all__ = [
    "make_client",
    "send",
    "parse_json",
    "parse_xml",
    "to_xml_bytes",
    "MAX_RESPONSE_BYTES",
]

MAX_RESPONSE_BYTES = 1_000_000

USER_AGENT = "flask-phoneverify"


#: request extension that carries a secret query string down to the network transport
SECRET_QUERY = "flask_phoneverify.secret_query"  # noqa: S105 - a name, not a secret


class HiddenQueryTransport(httpx.BaseTransport):
    """Adds a secret query string on the way out, below the client.

    The client's request (what httpx logs at INFO and attaches to its exceptions)
    keeps a bare path; only the copy handed to the network carries the query, so
    credentials, numbers and PINs that a vendor wants in the URL reach no log.
    """

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        extensions = dict(request.extensions)
        query = extensions.pop(SECRET_QUERY, None)
        if not query:
            return self._inner.handle_request(request)
        wire = httpx.Request(
            request.method,
            request.url.copy_merge_params(query),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return self._inner.handle_request(wire)

    def close(self) -> None:
        self._inner.close()


def make_client(timeout: float, *, event_hooks: dict[str, list[Any]] | None = None) -> httpx.Client:
    """One client per app and provider: connection reuse, fixed timeouts, no env proxies
    that could route credentials elsewhere, secret queries kept out of logs."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
        follow_redirects=False,
        transport=HiddenQueryTransport(),
        event_hooks=event_hooks or {},
    )


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    vendor: str,
    secret_query: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request; raise ProviderError subclasses for transport failures and
    HTTP 5xx. 4xx answers are returned for the provider to interpret.

    ``secret_query``: query parameters that must never be logged (see HiddenQueryTransport)."""
    if secret_query:
        kwargs["extensions"] = {**kwargs.get("extensions", {}), SECRET_QUERY: secret_query}
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as e:
        raise ProviderUnavailable(
            f"{vendor} did not answer in time. Please try again.",
            detail=f"{type(e).__name__} on {method} {_without_query(url)}",
        ) from e
    except httpx.HTTPError as e:
        raise ProviderUnavailable(
            f"{vendor} could not be reached. Please try again in a moment.",
            detail=f"{type(e).__name__} on {method} {_without_query(url)}",
        ) from e
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise ProviderProtocolError(detail=f"{vendor} answered {len(response.content)} bytes")
    if response.status_code >= 500:
        raise ProviderUnavailable(
            f"{vendor} is having trouble right now. Please try again in a moment.",
            detail=f"HTTP {response.status_code} on {method} {_without_query(url)}",
        )
    if response.status_code in (401, 403):
        raise ProviderConfigError(detail=f"HTTP {response.status_code} from {vendor}")
    return response


def _without_query(url: str) -> str:
    """The URL for a log line: the query may hold credentials."""
    return url.split("?", 1)[0]


def parse_json(response: httpx.Response, *, vendor: str) -> Any:
    """The JSON body, or ProviderProtocolError."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProviderProtocolError(
            detail=f"{vendor} answered HTTP {response.status_code} with a body that is not JSON"
        ) from e


def parse_xml(body: bytes, *, vendor: str) -> ET.Element:
    """Parse provider XML with defusedxml; refuse DTDs, entities and anything malformed."""
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProviderProtocolError(detail=f"{vendor} sent {len(body)} bytes of XML")
    try:
        root: ET.Element = SafeET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        return root
    except (DefusedXmlException, ET.ParseError, ValueError) as e:
        raise ProviderProtocolError(
            detail=f"{vendor} sent XML we refuse to parse: {type(e).__name__}"
        ) from e


def to_xml_bytes(root: ET.Element, *, declaration: bool = True) -> bytes:
    """Serialise an element built with ElementTree (values are escaped by the library)."""
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=declaration)
    return data
