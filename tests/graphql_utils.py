"""A GraphQL client of the chat app for tests: operations over HTTP, subscriptions over a real
WebSocket speaking graphql-transport-ws (connection_init, subscribe, next..., complete)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

PROTOCOL = "graphql-transport-ws"


def gql(http: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    """The whole response ({"data", "errors"?}); `http` is an /api client (cookie or key)."""
    url = str(http.base_url).removesuffix("/").removesuffix("/api") + "/graphql"
    r = http.post(url, json={"query": query, "variables": variables})
    assert r.status_code == 200, r.text
    return dict(r.json())


def data(http: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    """The data of an operation that must succeed."""
    got = gql(http, query, **variables)
    assert "errors" not in got, got["errors"]
    return dict(got["data"])


def error_codes(response: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in response.get("errors", [])]


@contextmanager
def graphql_socket(server: str, headers: dict[str, str]) -> Iterator[ClientConnection]:
    """A socket past connection_init (acknowledged)."""
    url = server.replace("http", "ws", 1) + "/graphql"
    with connect(url, subprotocols=[PROTOCOL], additional_headers=headers) as ws:  # type: ignore[list-item]
        ws.send(json.dumps({"type": "connection_init"}))
        ack = json.loads(ws.recv(timeout=30))
        assert ack["type"] == "connection_ack", ack
        yield ws


def subscribe(ws: ClientConnection, op_id: str, query: str, **variables: Any) -> None:
    payload = {"query": query, "variables": variables}
    ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))


def results(ws: ClientConnection, op_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The subscription's `next` payloads until its `complete` (or the first `limit`); an
    `error` message ends it too, returned as {"errors": [...]}."""
    got: list[dict[str, Any]] = []
    while limit is None or len(got) < limit:
        message = json.loads(ws.recv(timeout=60))
        if message.get("id") != op_id or message["type"] == "ping":
            continue
        if message["type"] == "complete":
            break
        if message["type"] == "error":
            got.append({"errors": message["payload"]})
            break
        assert message["type"] == "next", message
        got.append(message["payload"])
    return got
