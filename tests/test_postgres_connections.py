"""A runner process holds at most 2 PostgreSQL connections, named in ``pg_stat_activity`` by its pid and host."""

from __future__ import annotations

import os
import socket
import threading

from smallab_db import ExperimentRunner


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
