"""The store written once in SQL, for every SQL engine behind a ``Dialect``."""

from __future__ import annotations

from facetrail.store.sql.accounts import AccountTables
from facetrail.store.sql.audit import AuditTables
from facetrail.store.sql.cases import CaseTables
from facetrail.store.sql.core import Dialect, SQLCore
from facetrail.store.sql.ingest import IngestTables
from facetrail.store.sql.jobs import JobTables
from facetrail.store.sql.orgs import OrgTables
from facetrail.store.sql.rates import RateTables
from facetrail.store.sql.rights import RightsTables

__all__ = ["Dialect", "SQLCore", "SQLStore"]


class SQLStore(IngestTables, OrgTables, AccountTables, CaseTables, JobTables, AuditTables,
               RightsTables, RateTables):
    """Every section of the ``Store`` protocol over one ``Dialect``."""
