"""Analysis of a sweep: the CKA engine, the tables and their storage, queries, charts, report.

Heavy libraries (Altair, DuckDB, vl-convert) load only when a query, chart or report is made,
so `import repsweep.analysis` stays light for Ray workers.
"""

from repsweep.analysis.engine.cka import MIN_BATCH, CKAAccumulator, CKAResult, combine, linear_cka, minibatch_cka
from repsweep.analysis.tables.query import Results, open_results
from repsweep.analysis.tables.schemas import SCHEMAS, TableError
from repsweep.analysis.tables.store import SweepStore
from repsweep.analysis.engine.stream import stream_batches

__all__ = ["MIN_BATCH", "CKAAccumulator", "CKAResult", "Results", "SCHEMAS", "SweepStore", "TableError",
           "combine", "linear_cka", "minibatch_cka", "open_results", "stream_batches"]
