"""DuckDB storage: the schema and every read and write (the only package with SQL).

`Database(path)` is a handle on a file; `storage.writes` and `storage.reads` hold the
functions. See josh_core/storage/db.py for how several processes share a file.
"""

from josh_core.storage.db import Database, DatabaseBusy

__all__ = ["Database", "DatabaseBusy"]
