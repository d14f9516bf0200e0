"""Which mitmproxy versions the addon runs on, checked once when it is loaded.

Intercept mode patches mitmproxy's HTTP/2 and HTTP layers (``intercept.py``, whose ``apply``
calls this check), observe mode chooses mitmproxy's layers itself (``layers.py``) and mirrors
flows with its hook classes (``flows.py``): all are internals that change between mitmproxy
releases, so an untested version is refused with one line rather than failing strangely in the
middle of a connection.
"""

from __future__ import annotations

#: the versions tested, [MINIMUM, BELOW); keep in line with the ``live`` extra in pyproject.toml.
MINIMUM = (12, 3)
BELOW = (13, 0)


def _version_tuple(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def unsupported_mitmproxy(version: str | None = None) -> str | None:
    """None when ``version`` (default: the installed mitmproxy) is supported, else the line
    that says why not and what to install."""
    if version is None:
        from mitmproxy.version import VERSION

        version = VERSION
    parsed = _version_tuple(version)
    if parsed is not None and MINIMUM <= parsed < BELOW:
        return None
    return (
        f"h2ws: mitmproxy {version} is not supported: the addon relies on proxy internals of "
        f"mitmproxy {MINIMUM[0]}.{MINIMUM[1]} to {BELOW[0] - 1}.x; "
        f"install a supported one with: pip install 'mitmproxy>={MINIMUM[0]}.{MINIMUM[1]},"
        f"<{BELOW[0]}'"
    )
