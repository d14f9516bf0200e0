"""What a test needs from the machine, in one place: a missing peer skips, and fails on CI.

A test that needs a peer -- a program (tshark, editcap, tcpdump, node, a browser) or an optional
library -- calls :func:`missing_peer` (or :func:`require_tools`, :func:`require_module`, the
:func:`needs_tools` decorator) when it is not there.  Outside CI that skips the test with the
reason; under ``CI=true`` it fails it, so that a CI run can never pass by skipping what it was
meant to check.  The team's sample captures beside the checkout are not part of the project:
without them a test skips (:func:`missing_sample`), on CI too.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from collections.abc import Callable
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_peer(reason: str) -> NoReturn:
    """Skip the test (fail it under ``CI=true``): a peer it needs is missing."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: a missing peer fails the test)", pytrace=False)
    pytest.skip(reason)


def missing_sample(reason: str) -> NoReturn:
    """Skip the test: a sample capture of the team's, not shipped with the project, is absent."""
    pytest.skip(reason)


def require_tools(*tools: str) -> None:
    """Every program of ``tools`` is on PATH, else :func:`missing_peer`."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        missing_peer(f"needs {', '.join(missing)}")


def require_module(name: str) -> ModuleType:
    """``import name``, else :func:`missing_peer`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing_peer(f"needs the Python module {name}")


def needs_tools(*tools: str) -> Callable[[F], F]:
    """Decorator: :func:`require_tools` before the test runs (its fixtures are set up first)."""

    def decorate(test: F) -> F:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> Any:
            require_tools(*tools)
            return test(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate
