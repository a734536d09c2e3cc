"""A runner process holds at most 2 PostgreSQL connections, named in ``pg_stat_activity`` by its pid and host; the
URL's own connection options hold for reading too."""

from __future__ import annotations

import os
import socket
import threading

import psycopg
import pytest
from sqlalchemy import text

from smallab_db import ExperimentRunner, SchemaError
from smallab_db.database import resolve_url
from smallab_db.migration import open_engine


def test_a_process_holds_at_most_two_connections_and_a_third_user_waits(postgres_url: str) -> None:
    runner = ExperimentRunner(postgres_url)
    first, second = runner.engine.connect(), runner.engine.connect()
    third_connected = threading.Event()

    def connect_a_third() -> None:
        with runner.engine.connect():
            third_connected.set()

    waiting = threading.Thread(target=connect_a_third, daemon=True)
    waiting.start()
    assert not third_connected.wait(1.0), "a third connection was opened beside two held ones"
    first.close()
    assert third_connected.wait(20.0), "the third user did not get the connection given back"
    waiting.join()
    second.close()
    runner.close()


def test_connections_are_named_by_process_and_host_in_pg_stat_activity(postgres_url: str) -> None:
    runner = ExperimentRunner(postgres_url)
    with runner.engine.connect() as connection:
        name = connection.exec_driver_sql("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert name.scalar_one() == f"smallab-db pid {os.getpid()} on {socket.gethostname()}"
    runner.close()


def test_reading_keeps_the_search_path_the_url_gives(postgres_url: str) -> None:
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("CREATE SCHEMA experiments")
    in_schema = postgres_url + "?options=-csearch_path%3Dexperiments"
    runner = ExperimentRunner(in_schema)
    runner.run("kept", [{"seed": 1}], lambda specification: {"x": specification["seed"]}, show_progress=False)
    runner.close()
    reader = open_engine(resolve_url(in_schema), writable=False)
    with reader.connect() as connection:
        assert connection.execute(text("SELECT name FROM batches")).scalars().all() == ["kept"]
        assert connection.execute(text("SHOW transaction_read_only")).scalar_one() == "on"
    reader.dispose()
    with pytest.raises(SchemaError, match="has no smallab-db schema"):  # the tables are in the schema named only
        open_engine(resolve_url(postgres_url), writable=False)
