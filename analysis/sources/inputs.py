"""The name of each input of one ``h2ws extract`` run: the ``capture`` column and the prefix of
every ``conn_id`` of a capture (``<name>:<n>``).

A base file name alone is not an identity: ``d1/cap.pcap`` and ``d2/cap.pcap`` would both number
their connections ``cap.pcap:0, 1, …`` and a JOIN over the tables would merge them.  So each input
is named by the shortest tail of its resolved path that no other input of the run shares:
``cap.pcap`` when it is the only one of that name, ``d1/cap.pcap`` and ``d2/cap.pcap`` when both are
given.  The names depend only on the set of inputs, not on their order or on the working
directory, so the same inputs give the same ids on every run.  The same file given twice is refused
(its rows would be written twice under one id).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath


class DuplicateInput(ValueError):
    """The same file was given twice."""


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def input_names(paths: Sequence[Path]) -> list[str]:
    """One distinct name per path (``/``-separated tail of its resolved path), in order.

    Raises :class:`DuplicateInput` when two paths are the same file.
    """
    resolved = [p.resolve() for p in paths]
    seen: dict[Path, Path] = {}
    for given, real in zip(paths, resolved, strict=True):
        if real in seen:
            raise DuplicateInput(f"{given} is given twice (also as {seen[real]})")
        seen[real] = given
    parts = [r.parts for r in resolved]
    names = []
    for i, mine in enumerate(parts):
        shared = max(
            (_common_tail(mine, other) for j, other in enumerate(parts) if j != i), default=0
        )
        keep = min(shared + 1, len(mine))
        names.append(str(PurePosixPath(*mine[-keep:])))
    return names
