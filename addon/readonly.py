"""Observe mode's mirror flows are read-only: what an addon changes on one is put back.

A mirror flow (``flows.py``) shows bytes that went through the relay already: nothing an addon
does to it can reach a peer.  mitmproxy's own flows are changed by hooks, so an addon written
for them edits a mirror flow just the same, and without this the console, mitmweb and ``-w``
would show the edit (or ``dropped=True``) as if it had happened.  Here, around every hook of a
mirror flow (``flows.HookQueue``):

- a change of the request or response (method, URL, headers, content, status, a response set
  by a ``request`` hook) or of the hook's WebSocket message (content, type) is undone, and
  ``message.drop()`` is undone (``dropped`` stays False);
- ``flow.kill()`` is ignored (:func:`mirror_flow`; stock mitmproxy raises "Flow is not
  killable" for a flow that is not live) and ``flow.intercept()`` never marks the flow, so
  mitmproxy's ``intercept`` option leaves ``intercepted`` False;
- each of these gets ONE warning per flow and hook, naming the hook; repeated edits of every
  message of a WebSocket are not repeated in the log.

Not covered: other attributes of the flow (``metadata``, ``comment``, ``marked`` are a user's
notes, not the wire's, and stay as set), and changes made outside a hook (e.g. from mitmweb's
editor, which mitmproxy itself allows on any flow that is not live).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, http
from mitmproxy.websocket import WebSocketMessage

logger = logging.getLogger(__name__)

#: instance attributes of a mirror flow (not part of its saved state)
_REFUSED = "_h2ws_refused"
_WARNED = "_h2ws_warned"


def mirror_flow(client: connection.Client, server: connection.Server) -> http.HTTPFlow:
    """A new mirror ``HTTPFlow`` (not live) whose ``kill`` and ``intercept`` only note the
    attempt, which the hook's guard then reports.

    Per instance, not a subclass: mitmproxy names a flow's type after its class (and saves and
    loads flows by that name), and a copy (mitmweb's duplicate, a replay) must be an ordinary
    flow again.
    """
    flow = http.HTTPFlow(client, server, live=False)

    def refuse(what: str) -> Callable[[], None]:
        def refused() -> None:
            flow.__dict__.setdefault(_REFUSED, set()).add(what)

        return refused

    flow.__dict__["kill"] = refuse("kill()")
    flow.__dict__["intercept"] = refuse("intercept")
    return flow


def _state(message: http.Message | None) -> Any:
    return None if message is None else message.get_state()  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class Snapshot:
    """What a mirror flow was before one hook."""

    hook: str
    flow: http.HTTPFlow
    request: http.Request
    request_state: Any
    response: http.Response | None
    response_state: Any
    message: WebSocketMessage | None = None
    message_content: bytes = b""
    message_type: Any = None


def before(hook: str, flow: http.HTTPFlow) -> Snapshot:
    """The flow before ``hook`` runs on every addon.  For ``websocket_message`` only the
    hook's message is kept (cheap: once per message); otherwise request and response."""
    ws = flow.websocket
    if hook == "websocket_message" and ws is not None and ws.messages:
        message = ws.messages[-1]
        return Snapshot(
            hook, flow, flow.request, None, flow.response, None,
            message, message.content, message.type,
        )  # fmt: skip
    return Snapshot(
        hook,
        flow,
        flow.request,
        _state(flow.request),
        flow.response,
        _state(flow.response),
    )


def after(snap: Snapshot) -> None:
    """Undoes what the hook's addons changed (see the module docstring), with one warning per
    flow and hook."""
    flow = snap.flow
    undone: list[str] = []
    refused = flow.__dict__.pop(_REFUSED, None)
    if refused:
        undone += sorted(refused)
    if flow.intercepted:  # marked by some other means than intercept()
        flow.intercepted = False
        undone.append("intercept")
    message = snap.message
    if message is not None:
        if message.content != snap.message_content or message.type != snap.message_type:
            message.content = snap.message_content
            message.type = snap.message_type
            undone.append("message content")
        if message.dropped:
            message.dropped = False
            undone.append("message.drop()")
    else:
        if flow.request is not snap.request or _state(snap.request) != snap.request_state:
            flow.request = snap.request
            snap.request.set_state(snap.request_state)  # type: ignore[no-untyped-call]
            undone.append("request")
        response_changed = flow.response is not snap.response or (
            snap.response is not None and _state(snap.response) != snap.response_state
        )
        if response_changed:
            flow.response = snap.response
            if snap.response is not None:
                snap.response.set_state(snap.response_state)  # type: ignore[no-untyped-call]
            undone.append("response")
    if flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE:
        flow.error = None  # killed some other way than kill() (e.g. by setting the error)
        undone.append("kill")
    if undone:
        _warn(snap.hook, flow, undone)


def _warn(hook: str, flow: http.HTTPFlow, undone: list[str]) -> None:
    warned: set[str] = flow.__dict__.setdefault(_WARNED, set())
    if hook in warned:
        return
    warned.add(hook)
    logger.warning(
        f"h2ws: a {hook} hook changed a read-only mirror flow ({', '.join(undone)}; "
        f"{flow.request.pretty_url}): ignored, observe mode relayed the bytes as they came "
        "(h2ws_mode=intercept makes flows changeable)"
    )


__all__ = ["Snapshot", "after", "before", "mirror_flow"]
