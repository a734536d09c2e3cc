"""Asking SQLite itself whether a statement only reads, before it runs.

Python's ``sqlite3`` module does not expose ``sqlite3_stmt_readonly``, so this module calls it through ``ctypes`` on
the very SQLite library that ``sqlite3`` uses: ``ctypes.CDLL`` on the ``_sqlite3`` extension module looks symbols up
in that module and in the libraries it was linked with (``libsqlite3.so.0`` here), so the parser that judges the
statement is the one that will run it, whatever other SQLite the system may hold. The statement is only prepared,
never stepped, on a separate connection opened read-only (``mode=ro``), and that connection is closed at once.
Other libraries (apsw, for example) bundle a SQLite of their own, whose verdict could differ from the library
that runs the statement.
"""

from __future__ import annotations

import _sqlite3
import ctypes
import functools
import os
import urllib.parse

from smallab_db.errors import QueryError
from smallab_db.sql_query import failure_error, several_statements_error, writing_error

_SQLITE_OPEN_READONLY = 0x00000001
_SQLITE_OPEN_URI = 0x00000040


@functools.cache
def _library() -> ctypes.CDLL:
    """The SQLite library of Python's ``sqlite3`` module, with the signatures of the functions used here.

    Raises:
        QueryError: that library's functions cannot be found (a ``sqlite3`` module that hides them).
    """
    try:
        library = ctypes.CDLL(_sqlite3.__file__)
        pointer, pointer_to_pointer = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        library.sqlite3_open_v2.argtypes = [ctypes.c_char_p, pointer_to_pointer, ctypes.c_int, ctypes.c_char_p]
        library.sqlite3_close_v2.argtypes = [pointer]
        library.sqlite3_errmsg.argtypes = [pointer]
        library.sqlite3_errmsg.restype = ctypes.c_char_p
        library.sqlite3_prepare_v2.argtypes = [pointer, pointer, ctypes.c_int, pointer_to_pointer, pointer_to_pointer]
        library.sqlite3_stmt_readonly.argtypes = [pointer]
        library.sqlite3_finalize.argtypes = [pointer]
    except (OSError, AttributeError) as error:
        raise QueryError(
            f"cannot ask SQLite whether the statement only reads: the SQLite library of this Python's sqlite3 "
            f"module ({_sqlite3.__file__}) does not expose its functions ({error}); use a Python whose sqlite3 "
            "module links SQLite as a shared library"
        ) from error
    return library


def check_reads_only(path: str, sql: str) -> None:
    """Refuse ``sql`` unless SQLite reports it as one statement that does not write the database at ``path``.

    Raises:
        QueryError: the statement does not parse, is more than one statement, or SQLite says it may write.
    """
    library = _library()
    try:
        text = sql.encode("utf-8")
    except UnicodeEncodeError as error:
        raise QueryError(f"the query is not valid Unicode text ({error}): check how it was typed or encoded") from error
    handle = ctypes.c_void_p()
    location = f"file:{urllib.parse.quote(os.fsencode(path))}?mode=ro".encode()  # the file's bytes, UTF-8 or not
    try:
        if library.sqlite3_open_v2(location, ctypes.byref(handle), _SQLITE_OPEN_READONLY | _SQLITE_OPEN_URI, None):
            raise QueryError(f"cannot open {path!r} to check the query: {_error_message(library, handle)}")
        buffer = ctypes.create_string_buffer(text, len(text))
        first_is_read_only, rest = _prepare(library, handle, buffer, 0)
        if rest is not None and _prepare(library, handle, buffer, rest)[1] is not None:
            raise several_statements_error()
        if not first_is_read_only:
            raise writing_error("SQLite reports that it writes")
    finally:
        library.sqlite3_close_v2(handle)


def _prepare(
    library: ctypes.CDLL, handle: ctypes.c_void_p, buffer: ctypes.Array[ctypes.c_char], start: int
) -> tuple[bool, int | None]:
    """Prepare the first statement of ``buffer`` from offset ``start`` and finalize it at once.

    Returns:
        Whether SQLite reports that statement as read-only, and the offset after it (None when the text held only
        whitespace and comments, so that there was no statement).

    Raises:
        QueryError: the text does not parse.
    """
    statement, tail = ctypes.c_void_p(), ctypes.c_void_p()
    begin = ctypes.addressof(buffer) + start
    if library.sqlite3_prepare_v2(handle, begin, len(buffer) - start, ctypes.byref(statement), ctypes.byref(tail)):
        raise failure_error(_error_message(library, handle))
    if statement.value is None:
        return True, None
    try:
        return bool(library.sqlite3_stmt_readonly(statement)), (tail.value or begin) - ctypes.addressof(buffer)
    finally:
        library.sqlite3_finalize(statement)


def _error_message(library: ctypes.CDLL, handle: ctypes.c_void_p) -> str:
    message = library.sqlite3_errmsg(handle) if handle.value else None
    return message.decode("utf-8", "replace") if message else "out of memory"
