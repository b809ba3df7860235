"""What the HTTP providers share: an httpx client per app, one way to send a
request that turns every transport failure into a ProviderError (the mapping
itself lives in :mod:`.vendor`, which the SOAP provider uses too), and safe XML.

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

from ..errors import ProviderProtocolError
from .vendor import http_status_error, too_large, unreachable, without_query

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
    where = f"{method} {without_query(url)}"
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as e:
        timed_out = isinstance(e, httpx.TimeoutException)
        raise unreachable(vendor, where, timed_out=timed_out, cause=type(e).__name__) from e
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise too_large(vendor, len(response.content), where)
    error = http_status_error(response.status_code, vendor=vendor, where=where)
    if error is not None:
        raise error
    return response


def parse_json(response: httpx.Response, *, vendor: str) -> Any:
    """The JSON body, or ProviderProtocolError."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProviderProtocolError(
            detail=f"{vendor} answered HTTP {response.status_code} with a body that is not JSON"
        ) from e


def parse_xml(body: bytes, *, vendor: str, where: str | None = None) -> ET.Element:
    """Parse provider XML with defusedxml; refuse DTDs, entities and anything malformed.

    ``where`` (the request it answered) starts the error's detail."""
    at = f"{where}: " if where else ""
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProviderProtocolError(detail=f"{at}{vendor} sent {len(body)} bytes of XML")
    try:
        root: ET.Element = SafeET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        return root
    except (DefusedXmlException, ET.ParseError, ValueError) as e:
        raise ProviderProtocolError(
            detail=f"{at}{vendor} sent XML we refuse to parse: {type(e).__name__}"
        ) from e


def to_xml_bytes(root: ET.Element, *, declaration: bool = True) -> bytes:
    """Serialise an element built with ElementTree (values are escaped by the library)."""
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=declaration)
    return data
