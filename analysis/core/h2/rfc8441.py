"""Extended CONNECT (RFC 8441 §3-§5): which streams are WebSockets, and what breaks the rules.

One job, as pure functions the stream layer calls: classify a request (§4: ``:method`` CONNECT
with ``:protocol`` websocket is a WebSocket; other CONNECTs are tunnels), judge the server's
``SETTINGS_ENABLE_CONNECT_PROTOCOL`` (§3), the request's pseudo-headers (§4) and its
``sec-websocket-version`` (§5), and whether the response accepted the WebSocket (§5: a 2xx).
Each problem is returned as (severity, code, message) for a diagnostic row of layer ``rfc8441``.
"""

from __future__ import annotations

from h2ws.analysis.core.headers import HeaderList, first

#: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3)
ENABLE_CONNECT_PROTOCOL = 0x8

Problem = tuple[str, str, str]


def stream_kind(method: str | None, protocol: str | None) -> str:
    """``websocket``, ``connect`` (a tunnel or another protocol) or ``http`` (§4)."""
    if method == "CONNECT":
        if protocol is not None and protocol.lower() == "websocket":
            return "websocket"
        return "connect"
    return "http"


def setting_problem(enabled: bool | None, value: int) -> Problem | None:
    """What is wrong with a server's SETTINGS_ENABLE_CONNECT_PROTOCOL of ``value``, when it was
    ``enabled`` before (§3: 0 or 1, and never withdrawn once sent as 1)."""
    if value == 1:
        return None
    if value == 0:
        if enabled:
            return (
                "error",
                "rfc8441_setting_withdrawn",
                "server sent SETTINGS_ENABLE_CONNECT_PROTOCOL=0 after 1 (RFC 8441 §3 forbids it)",
            )
        return None
    return (
        "error",
        "rfc8441_setting_invalid",
        f"SETTINGS_ENABLE_CONNECT_PROTOCOL={value}; only 0 and 1 are valid",
    )


def request_problems(
    kind: str,
    method: str | None,
    protocol: str | None,
    scheme: str | None,
    path: str | None,
    headers: HeaderList,
    setting_seen: bool,
) -> list[Problem]:
    """What is wrong with a request of ``kind`` (:func:`stream_kind`, or ``push``) that carries
    ``:protocol`` (nothing when it carries none)."""
    if protocol is None:
        return []
    if method != "CONNECT":
        return [
            (
                "error",
                "rfc8441_protocol_without_connect",
                f":protocol {protocol!r} on a {method} request (RFC 8441 §4)",
            )
        ]
    problems: list[Problem] = []
    if scheme is None or path is None:
        problems.append(
            (
                "error",
                "rfc8441_missing_pseudo_header",
                "extended CONNECT without :scheme or :path (RFC 8441 §4)",
            )
        )
    if not setting_seen:
        problems.append(
            (
                "warning",
                "rfc8441_setting_not_seen",
                "extended CONNECT before the server's SETTINGS_ENABLE_CONNECT_PROTOCOL=1 "
                "was seen (RFC 8441 §3)",
            )
        )
    if kind == "websocket":
        version = first(headers, "sec-websocket-version")
        if version != "13":
            problems.append(
                (
                    "warning",
                    "rfc8441_websocket_version",
                    f"sec-websocket-version is {version!r}, not '13' (RFC 8441 §5)",
                )
            )
    return problems


def accepted(status: int | None) -> bool:
    """A 2xx response accepts the extended CONNECT (§5)."""
    return status is not None and 200 <= status < 300
