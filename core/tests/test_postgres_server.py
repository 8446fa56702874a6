"""The PostgreSQL fixtures give each test a working, private, empty database."""

from __future__ import annotations

import psycopg
import pytest

from tidings.testing.servers import PostgresServer

pytestmark = pytest.mark.postgres

_seen: dict[str, str] = {}


def _user_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'public'"
        ).fetchall()
    return sorted(row[0] for row in rows)


def test_server_answers(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute("select version()").fetchone()
        encoding = conn.execute("show server_encoding").fetchone()
    assert row is not None
    assert row[0].startswith("PostgreSQL ")
    assert encoding == ("UTF8",)
    assert postgres_server.running


def test_database_is_usable(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("create table note (id serial primary key, body text not null)")
        conn.execute("insert into note (body) values (%s), (%s)", ("hello", "wörld"))
        rows = conn.execute("select body from note order by id").fetchall()
    assert rows == [("hello",), ("wörld",)]
    assert _user_tables(postgres_url) == ["note"]


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_fresh_database(postgres_url: str, run: str) -> None:
    assert _user_tables(postgres_url) == []
    assert postgres_url not in _seen.values()
    _seen[run] = postgres_url
    with psycopg.connect(postgres_url) as conn:
        conn.execute("create table left_behind (id int)")
        dbname = conn.execute("select current_database()").fetchone()
    assert dbname is not None
    assert postgres_url.endswith("/" + dbname[0])


def test_database_is_dropped_afterwards(postgres_server: PostgresServer) -> None:
    assert _seen, "runs after test_each_test_gets_a_fresh_database"
    names = {url.rsplit("/", 1)[1] for url in _seen.values()}
    with psycopg.connect(postgres_server.url) as conn:
        rows = conn.execute("select datname from pg_database").fetchall()
    assert names.isdisjoint(row[0] for row in rows)


def test_create_and_drop_with_open_connection(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("t_manual_drop")
    conn = psycopg.connect(url)
    try:
        postgres_server.drop_database("t_manual_drop")  # WITH (FORCE) ends our session
    finally:
        conn.close()
    with psycopg.connect(postgres_server.url) as admin:
        row = admin.execute(
            "select count(*) from pg_database where datname = 't_manual_drop'"
        ).fetchone()
    assert row == (0,)


def test_rejects_unsafe_database_names(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="not a valid database name"):
        postgres_server.create_database('x"; drop database postgres; --')
