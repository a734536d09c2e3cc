"""smallab's ``specification_hashing``: the stable hash of a specification.

smallab 1.x returned an MD5 in words; this is smallab-db's hash (SHA-256 of the canonical JSON, 64 hex digits), which
names the run folders of an export and fills the ``spec_hash`` column.
"""

from __future__ import annotations

from smallab_db.specification import specification_hash

__all__ = ["specification_hash"]
