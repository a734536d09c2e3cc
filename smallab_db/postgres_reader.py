"""PostgreSQL: the role that ``smallab-db query`` runs statements as, and the function that runs them.

``smallab-db query`` must not write, run programs or read files even when it connects as a superuser. ``SET ROLE``
cannot take that power away: a superuser's statement can set the role back with ``set_config('role', …)``. A
``SECURITY DEFINER`` function can: inside one, PostgreSQL refuses to change ``role`` or ``session_authorization``,
and checks every privilege against the function's owner. So statements run inside the function
:data:`QUERY_FUNCTION`, owned by the ``NOLOGIN`` role :data:`READER_ROLE`, which may only use the schema and select
from ``batches``, ``runs`` and ``run_details``. The function runs the statement as a subquery,
``SELECT * FROM (<statement>) AS q``, into which only a query fits (SELECT, VALUES, TABLE, WITH … SELECT): COPY, DO,
CHECKPOINT, SET and data-modifying WITH do not parse there.

Migration 0003 calls :func:`install`; ``smallab-db migrate`` calls :func:`ensure_installed` on an up-to-date
database, which installs what a user who could not create the role had to leave out. Roles belong to the whole
cluster, so databases share the role, and creating it is safe when several databases are migrated at once.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from smallab_db.database import describe
from smallab_db.errors import QueryError

READER_ROLE = "smallab_db_reader"
QUERY_FUNCTION = "smallab_db_read_only_query"
READABLE = ("batches", "runs", "run_details")
FUNCTION_BODY = """
BEGIN
    RETURN QUERY EXECUTE 'SELECT * FROM (' || chr(10) || query || chr(10) || ') AS q';
END
"""
_INSUFFICIENT_PRIVILEGE = "42501"

logger = logging.getLogger("smallab_db")

# Another database's migration may create the role between the check and the creation: its CREATE ROLE then
# fails with duplicate_object, or unique_violation when both commit at the same moment; the role exists either way.
_CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        CREATE ROLE {READER_ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$
"""

# Handing the function to the role needs membership in it: superusers have it, a user with CREATEROLE grants it.
_JOIN_ROLE = f"""
DO $$
BEGIN
    IF NOT pg_has_role(current_user, '{READER_ROLE}', 'MEMBER') THEN
        GRANT {READER_ROLE} TO CURRENT_USER;
    END IF;
END
$$
"""

_CHECK = f"""
SELECT r.rolname = '{READER_ROLE}' AND p.prosecdef AND p.prosrc = %(body)s AS intact,
       r.rolsuper OR r.rolcanlogin OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
           OR EXISTS (SELECT FROM pg_auth_members AS m WHERE m.member = r.oid) AS more_than_reading,
       has_function_privilege(p.oid, 'EXECUTE') AS executable,
       current_user AS user_name,
       n.nspname AS schema,
       (SELECT substr(setting, length('search_path=') + 1) FROM unnest(p.proconfig) AS setting
        WHERE starts_with(setting, 'search_path=')) AS search_path
FROM pg_proc AS p JOIN pg_roles AS r ON r.oid = p.proowner JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.oid = to_regprocedure('{QUERY_FUNCTION}(text)')
"""


def install(connection: Connection) -> bool:
    """Create the role unless the cluster has it, let it read smallab-db's tables in the current schema, and create
    the function there, owned by the role and executable by the current user only.

    Returns:
        True; False when the current user may not create the role or hand the function to it: then nothing was
        changed, and a warning says how to install them later.
    """
    schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted = connection.dialect.identifier_preparer.quote_schema(schema)
    function = f"{quoted}.{QUERY_FUNCTION}(text)"
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(_CREATE_ROLE)
            connection.exec_driver_sql(_JOIN_ROLE)
            connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA {quoted} TO {READER_ROLE}")
            relations = ", ".join(f"{quoted}.{name}" for name in READABLE)
            connection.exec_driver_sql(f"GRANT SELECT ON {relations} TO {READER_ROLE}")
            connection.exec_driver_sql(
                f"CREATE OR REPLACE FUNCTION {quoted}.{QUERY_FUNCTION}(query text) RETURNS SETOF record LANGUAGE "
                f"plpgsql STABLE SECURITY DEFINER SET search_path = {quoted}, pg_temp AS $body${FUNCTION_BODY}$body$"
            )
            connection.exec_driver_sql(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
            _hand_over(connection, function, schema, quoted)
            connection.exec_driver_sql(f"GRANT EXECUTE ON FUNCTION {function} TO CURRENT_USER")
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        logger.warning(
            "smallab-db: the role %s or the function %s could not be created in %s (%s), so `smallab-db query` "
            "refuses to run there; run `smallab-db migrate %s` as a user allowed to create roles (a superuser, or "
            "one with CREATEROLE)",
            READER_ROLE,
            QUERY_FUNCTION,
            describe(connection.engine.url),
            str(error.orig).strip().splitlines()[0],
            describe(connection.engine.url),
        )
        return False
    return True


def _hand_over(connection: Connection, function: str, schema: str, quoted: str) -> None:
    """Make the role the function's owner: the new owner needs CREATE on the schema, which it gets only meanwhile."""
    already = connection.exec_driver_sql(
        "SELECT has_schema_privilege(%s, %s, 'CREATE')", (READER_ROLE, schema)
    ).scalar_one()
    if not already:
        connection.exec_driver_sql(f"GRANT CREATE ON SCHEMA {quoted} TO {READER_ROLE}")
    connection.exec_driver_sql(f"ALTER FUNCTION {function} OWNER TO {READER_ROLE}")
    if not already:
        connection.exec_driver_sql(f"REVOKE CREATE ON SCHEMA {quoted} FROM {READER_ROLE}")


def uninstall(connection: Connection) -> None:
    """Drop the function and the role's privileges in this database; the role stays, as other databases of the
    cluster may use it (a superuser drops it with ``DROP ROLE smallab_db_reader`` once none does)."""
    schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
    quoted = connection.dialect.identifier_preparer.quote_schema(schema)
    connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {quoted}.{QUERY_FUNCTION}(text)")
    if connection.exec_driver_sql("SELECT to_regrole(%s) IS NOT NULL", (READER_ROLE,)).scalar_one():
        relations = ", ".join(f"{quoted}.{name}" for name in READABLE)
        connection.exec_driver_sql(f"REVOKE ALL ON {relations} FROM {READER_ROLE}")
        connection.exec_driver_sql(f"REVOKE ALL ON SCHEMA {quoted} FROM {READER_ROLE}")


def ensure_installed(connection: Connection) -> None:
    """Install the role and the function if :func:`check_installed` finds them missing or unusable."""
    try:
        check_installed(connection)
    except QueryError:
        install(connection)


class InstalledFunction(NamedTuple):
    """Where the function is, and the search path it runs statements with."""

    schema: str
    search_path: str


def check_installed(connection: Connection) -> InstalledFunction:
    """Check that the function is installed as :func:`install` leaves it and that the current user may run it.

    Returns:
        The function's schema and search path.

    Raises:
        QueryError: naming what is wrong and the fix.
    """
    url = describe(connection.engine.url)
    migrate = (
        f"run `smallab-db migrate {url}` as a user allowed to create roles (a superuser, or one with CREATEROLE)"
    )
    row = connection.exec_driver_sql(_CHECK, {"body": FUNCTION_BODY}).one_or_none()
    if row is None:
        raise QueryError(
            f"database {url} has no function {QUERY_FUNCTION}(text), in which smallab-db query runs statements "
            f"as the role {READER_ROLE}: {migrate}"
        )
    if not row.intact or row.search_path is None:
        raise QueryError(
            f"the function {QUERY_FUNCTION}(text) of database {url} is not the one smallab-db installs (security "
            f"definer, owned by the role {READER_ROLE}): {migrate}"
        )
    if row.more_than_reading:
        raise QueryError(
            f"the role {READER_ROLE} may do more than read (it can log in, has a privileged attribute or belongs "
            f"to a role), so smallab-db query does not run statements as it: have a superuser run `ALTER ROLE "
            f"{READER_ROLE} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS` and revoke its "
            "role memberships"
        )
    if not row.executable:
        raise QueryError(
            f"user {row.user_name} may not run the function {QUERY_FUNCTION}(text) of database {url}: have a "
            f"superuser run `GRANT EXECUTE ON FUNCTION {QUERY_FUNCTION}(text) TO {row.user_name}`"
        )
    return InstalledFunction(row.schema, row.search_path)
