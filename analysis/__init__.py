"""Analysis of a sweep: the CKA engine, table schemas and storage, queries and charts."""

from analysis.tables import SCHEMAS, SweepStore, TableError

__all__ = ["SCHEMAS", "SweepStore", "TableError"]
