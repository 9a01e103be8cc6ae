"""DuckDB, the tests' SQL oracle: one in-memory database a process, a new connection to it per
query (``connect().cursor()``, about 3 ms; ``duckdb.connect()`` opens a new database, about 40 ms:
1,000 sort oracles took 30 s that way). Tables a connection registers and its temporary views
are its own, and go with it."""
from __future__ import annotations

from typing import Any

_DB: Any = None


def connect() -> Any:
    """A fresh connection to the process's in-memory DuckDB database (close it, or let it go)."""
    global _DB
    import duckdb

    if _DB is None:
        _DB = duckdb.connect()
    return _DB.cursor()
