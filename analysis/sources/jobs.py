"""``h2ws extract --jobs N``: one capture decoded by N processes, each a share of its connections.

One job: share the work among processes and merge what they wrote; the pipeline each runs is
assembled in :mod:`.capture`.

Decoding is Python work on one CPU per process, and a capture's connections are independent
once TCP has put their bytes in order: so every process reads the whole capture and
reassembles TCP (about a sixth of the work, and what numbers the connections alike in every
process), then decrypts and decodes only the connections of its share, ``n % N == i`` for the
n-th connection, into tables of its own.  The tables are then merged into the usual one file per
table.  Rows are the same as with one process; their order is by share, then as before.

Flow files are not split: each is one task.  Several captures run side by side.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import DiagnosticRecord
from h2ws.analysis.sinks.writers import TableSink, merge_tables
from h2ws.analysis.sources.capture import Share, decode
from h2ws.analysis.sources.flowfile import is_flow_file

#: every connection of a capture, in one process
_WHOLE = Share()

#: Capture-level codes that mean an input gave nothing at all.
UNREADABLE = frozenset({"not_a_capture", "not_a_flow_file"})


class WorkerDied(RuntimeError):
    """A process of ``--jobs`` ended without its result; nothing was merged."""


#: Capture-level codes that concern one packet each: tallied like decoding problems (one line
#: with a count), not one line per packet -- a capture cut to a snap length has one per packet.
PER_PACKET_CODES = frozenset({"truncated_packet", "malformed_packet", "ip_fragment"})


@dataclass
class Tally:
    """What ``extract`` prints at the end: counts, and the first message of every problem."""

    stats: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    first_message: dict[str, str] = field(default_factory=dict)
    #: capture-level problems, one line each (each message starts with its input's name)
    notices: list[str] = field(default_factory=list)

    def report(self, diag: DiagnosticRecord) -> None:
        """Capture-level problems get a line each, except per-packet ones, which are tallied
        like decoding problems.  An input that could not be read at all counts in
        ``stats["unreadable"]``."""
        if diag.layer == "capture" and diag.code not in PER_PACKET_CODES:
            self.notices.append(f"{diag.message} ({diag.code})")
            if diag.code in UNREADABLE:
                self.stats["unreadable"] += 1
        elif diag.severity != "info":
            self.problems[diag.code] += 1
            message = f"{diag.conn_id or ''} {diag.message}".strip()
            self.first_message.setdefault(diag.code, message)

    def add(self, other: Tally) -> None:
        self.stats += other.stats
        self.problems += other.problems
        self.notices += other.notices
        for code, message in other.first_message.items():
            self.first_message.setdefault(code, message)


def _named(diag: DiagnosticRecord, path: Path, name: str) -> DiagnosticRecord:
    """A capture-level diagnostic whose message starts with its input's name: the row has no
    ``conn_id`` to say which file it is about, and several inputs may fail alike."""
    message = diag.message
    if message.startswith(f"{path.name}: "):
        message = message[len(path.name) + 2 :]
    return replace(diag, message=f"{name}: {message}")


def extract_into(
    sink: TableSink,
    path: Path,
    options: DecodeOptions,
    keylogs: Sequence[Path] = (),
    share: Share = _WHOLE,
    name: str | None = None,
) -> Tally:
    """Decode ``path`` into ``sink``; ``name`` as in :func:`.capture.capture_events`."""
    tally = Tally()
    label = name or path.name
    for record in decode(path, options, tally.stats, keylogs, share, name):
        if isinstance(record, DiagnosticRecord):
            if record.layer == "capture":
                record = _named(record, path, label)
            tally.report(record)
        sink.write(record)
    return tally


@dataclass(frozen=True)
class _Task:
    path: Path
    share: Share
    out_dir: Path
    fmt: str
    options: DecodeOptions
    keylogs: tuple[Path, ...]
    name: str | None = None


def _run_task(task: _Task) -> tuple[Tally, dict[str, int]]:
    with TableSink(task.out_dir, task.fmt) as sink:
        tally = extract_into(sink, task.path, task.options, task.keylogs, task.share, task.name)
    return tally, sink.counts


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def extract_parallel(
    paths: Sequence[Path],
    out_dir: Path,
    fmt: str,
    options: DecodeOptions,
    keylogs: Sequence[Path],
    jobs: int,
    names: Sequence[str] | None = None,
) -> tuple[Tally, dict[str, int]]:
    """Every capture in ``jobs`` shares (flow files whole), at most ``jobs`` processes at once;
    then one file per table in ``out_dir``.  ``names``: one per path, as in
    :func:`.capture.capture_events`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".h2ws-jobs-", dir=out_dir))
    try:
        tasks: list[_Task] = []
        for i, path in enumerate(paths):
            name = names[i] if names is not None else None
            shares = 1 if is_flow_file(path) else jobs
            for index in range(shares):
                share_dir = work / str(len(tasks))
                share = Share(index, shares)
                tasks.append(_Task(path, share, share_dir, fmt, options, tuple(keylogs), name))
        # spawn, not fork: pyarrow's allocator runs a thread from the moment it is loaded,
        # and forking a process with threads can deadlock the child.  Importing afresh costs
        # each worker about 0.3 s, at the same time; measured no slower than fork overall.
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                results = list(pool.map(_run_task, tasks))
        except BrokenProcessPool as exc:  # a worker killed (out of memory, a signal)
            raise WorkerDied(f"a decoding process died ({exc}); try fewer --jobs") from exc
        tally = Tally()
        counts: Counter[str] = Counter()
        for task_tally, task_counts in results:
            tally.add(task_tally)
            counts.update(task_counts)
        merge_tables([t.out_dir for t in tasks], out_dir, fmt)
        return tally, dict(counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
