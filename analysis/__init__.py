"""Analysis of a sweep: the CKA engine, table schemas and storage, queries, charts, report.

Heavy libraries (Altair, DuckDB, vl-convert) load only when a query, chart or report is made,
so `import analysis` stays light for Ray workers.
"""

from analysis.cka import MIN_BATCH, CKAAccumulator, CKAResult, combine, linear_cka, minibatch_cka
from analysis.probe import probe_batches
from analysis.query import Results, open_results
from analysis.tables import SCHEMAS, SweepStore, TableError

__all__ = ["MIN_BATCH", "CKAAccumulator", "CKAResult", "Results", "SCHEMAS", "SweepStore", "TableError",
           "combine", "linear_cka", "minibatch_cka", "open_results", "probe_batches"]
