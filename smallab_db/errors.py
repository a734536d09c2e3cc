"""The exceptions smallab-db raises for errors a user can cause."""

from __future__ import annotations

import errno


class SmallabError(Exception):
    """Base class of every error smallab-db raises on purpose."""


class SpecError(SmallabError, ValueError):
    """A specification is not a JSON object that survives a JSON round trip."""


class ExperimentError(SmallabError, TypeError):
    """The experiment, or what its ``main`` returned, is not what smallab-db can run or store."""


class DatabaseError(SmallabError):
    """The database cannot be opened, read or written."""


class TransientDatabaseError(DatabaseError):
    """The connection dropped or the database stayed busy; the same operation may succeed later. smallab-db retries
    these with backoff before raising one."""


class SchemaError(DatabaseError):
    """The database schema is not the one this version of smallab-db uses."""


class UsageError(SmallabError, ValueError):
    """An argument has a value smallab-db cannot use."""


class ExportError(SmallabError):
    """Runs cannot be exported to the requested folder."""


class MissingDependencyError(SmallabError, ImportError):
    """An optional dependency that a feature needs is not installed."""


class WorkerDiedError(SmallabError):
    """The worker process running a specification died (crash, ``os._exit``, or killed) instead of returning."""


class ResultNotStoredError(SmallabError):
    """The database refused a run's outcome (for example a result over its size limit); the run is stored as failed
    with this error instead."""


class ClaimLostError(SmallabError):
    """Another runner took over the run (its lease had lapsed), or it was deleted, while it ran: its worker stops,
    having written nothing since."""


class RemoteExperimentError(SmallabError):
    """An experiment raised an exception that could not be sent back from its worker; this carries its text."""


class QueryError(SmallabError):
    """A user's SQL statement failed, or tried to write."""


class UnreadableResultWarning(UserWarning):
    """Some stored results could not be unpickled (for example their module was renamed); they were left out."""


_OS_ERROR_FIXES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some space within your disk quota",
    errno.EFBIG: "free some disk space, or raise the file size limit (ulimit -f)",
    errno.EROFS: "choose a place on a writable file system",
    errno.EACCES: "change its permissions, or choose another path",
    errno.EPERM: "change its permissions, or choose another path",
    errno.ENOTDIR: "a file stands where a folder should be: move it away, or choose another path",
    errno.EEXIST: "something stands where a folder should be: move it away, or choose another path",
    errno.EISDIR: "a folder stands where a file should be: move it away, or choose another path",
    errno.ENAMETOOLONG: "give a shorter path",
    errno.ELOOP: "a symbolic link in the path loops: fix the link",
}


def describe_os_error(error: OSError) -> str:
    """Word an operating-system error for a message: what failed, on which path, and what fixes it."""
    paths = " -> ".join(f"{name!r:.1000}" for name in (error.filename, error.filename2) if name is not None)
    fix = _OS_ERROR_FIXES.get(error.errno or 0, "check the path, its permissions and the free disk space")
    return f"{error.strerror or error}{': ' + paths if paths else ''}; {fix}"
