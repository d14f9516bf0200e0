"""The sinks' names in one import, for the code that imported them from here before the
sinks were split: the writers are :mod:`h2ws.analysis.sinks.writers`, the reader
:mod:`h2ws.analysis.sinks.reader`.  New code imports from those.
"""

from h2ws.analysis.sinks.reader import read_table
from h2ws.analysis.sinks.writers import (
    CHECK_CALLS,
    CONVERT_ROWS,
    EXTENSIONS,
    FORMATS,
    Part,
    PartitionedSink,
    TableSink,
    merge_tables,
    warm_up,
)

__all__ = [
    "CHECK_CALLS",
    "CONVERT_ROWS",
    "EXTENSIONS",
    "FORMATS",
    "Part",
    "PartitionedSink",
    "TableSink",
    "merge_tables",
    "read_table",
    "warm_up",
]
