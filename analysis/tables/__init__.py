"""The sweep's tables: their schemas, the store that writes and reads them (local or object storage, `location`, `objectstore`), and SQL over them (`query`)."""
