"""Where ledger rows go: SQLite in a file (aiosqlite) or PostgreSQL (asyncpg), behind one small interface.

The schema is versioned: MIGRATIONS run in order, each once, recorded in routemesh_schema_migrations, under a
lock (an advisory lock on PostgreSQL, an immediate transaction on SQLite) so replicas starting together agree.
Inserts ignore a decision id already there, so a report delivered twice is one row.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from routemesh.telemetry.ledger.rows import COLUMNS, NAMES

TABLE = "ledger_requests"
MIGRATIONS_TABLE = "routemesh_schema_migrations"
_TYPES = {
    "sqlite": {"text": "TEXT NOT NULL DEFAULT ''", "bigint": "INTEGER NOT NULL DEFAULT 0",
               "double": "REAL", "json": "TEXT NOT NULL DEFAULT '[]'"},
    "postgres": {"text": "TEXT NOT NULL DEFAULT ''", "bigint": "BIGINT NOT NULL DEFAULT 0",
                 "double": "DOUBLE PRECISION", "json": "JSONB NOT NULL DEFAULT '[]'"},
}
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _create_table(dialect: str) -> str:
    types = _TYPES[dialect]
    columns = [f"{name} {types[kind]}" + (" PRIMARY KEY" if name == "decision_id" else "")
               for name, kind, _ in COLUMNS]
    return f"CREATE TABLE IF NOT EXISTS {TABLE} ({', '.join(columns)})"


# (version, what it does, statements for a dialect). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str, Any], ...] = (
    (1, "requests: one row per request, decision and outcome", lambda dialect: [
        _create_table(dialect),
        f"CREATE INDEX IF NOT EXISTS {TABLE}_ended ON {TABLE} (ended_at_ms)",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_tenant ON {TABLE} (tenant, ended_at_ms)",
    ]),
)
FEEDBACK_TABLE = "ledger_feedback"
_FEEDBACK_COLUMNS = "decision_id, score, label, comment, source, recorded_at_ms"
MIGRATIONS = (*MIGRATIONS, (2, "feedback: a caller's score of one answer", lambda dialect: [
    f"CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (decision_id TEXT PRIMARY KEY, "
    f"score {_TYPES[dialect]['double']} NOT NULL, label {_TYPES[dialect]['text']}, "
    f"comment {_TYPES[dialect]['text']}, source {_TYPES[dialect]['text']}, "
    f"recorded_at_ms {_TYPES[dialect]['bigint']})",
]))
TEXTS_TABLE = "ledger_texts"
_TEXT_COLUMNS = "decision_id, conversation, stored_at_ms, expires_at_ms"
MIGRATIONS = (*MIGRATIONS, (3, "texts: conversations kept for retraining where a route opts in", lambda dialect: [
    f"CREATE TABLE IF NOT EXISTS {TEXTS_TABLE} (decision_id TEXT PRIMARY KEY, "
    f"conversation {_TYPES[dialect]['json']}, stored_at_ms {_TYPES[dialect]['bigint']}, "
    f"expires_at_ms {_TYPES[dialect]['bigint']})",
    f"CREATE INDEX IF NOT EXISTS {TEXTS_TABLE}_expiry ON {TEXTS_TABLE} (expires_at_ms)",
]))
SCHEMA_VERSION = MIGRATIONS[-1][0]
# A kept conversation: (decision id, conversation JSON, stored at, expires at), milliseconds.
TextRow = tuple[str, str, int, int]
# Requests with a kept conversation and feedback: what `routemesh router train --from-ledger` learns from.
EXAMPLES_SQL = (f"SELECT t.conversation, r.serving_model, f.score FROM {TEXTS_TABLE} t "
                f"JOIN {FEEDBACK_TABLE} f ON f.decision_id = t.decision_id "
                f"JOIN {TABLE} r ON r.decision_id = t.decision_id WHERE r.serving_model <> '' "
                "ORDER BY r.ended_at_ms")
# What feedback needs of a request's row.
RequestFacts = dict[str, Any]
_FACT_COLUMNS = "tenant, serving_model, chosen_model, route, features"


def schema_markdown() -> str:
    """The table of ledger_requests as docs/ledger.md shows it (a test keeps the two the same)."""
    def kind(dialect: str, name: str) -> str:
        return _TYPES[dialect][name].partition(" NOT NULL")[0]

    lines = ["| column | SQLite | PostgreSQL | what it holds |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {kind('sqlite', k)} | {kind('postgres', k)} | {what} |" for name, k, what in COLUMNS]
    return "\n".join(lines)


class LedgerStore(Protocol):
    """A ledger database: open (and migrate), insert rows, count them, close."""

    url_for_humans: str

    async def open(self) -> None: ...

    async def insert(self, rows: Sequence[tuple[Any, ...]], texts: Sequence[TextRow] = ()) -> None: ...

    async def purge_texts(self, now_ms: int) -> int: ...

    async def examples(self) -> list[tuple[str, str, float]]: ...

    async def kept_texts(self, decision_ids: Sequence[str]) -> dict[str, str]: ...

    async def count(self) -> int: ...

    async def request_facts(self, decision_id: str) -> RequestFacts | None: ...

    async def rows(self, columns: Sequence[str], since_ms: int, until_ms: int) -> list[tuple[Any, ...]]: ...

    async def add_feedback(self, decision_id: str, score: float, label: str, comment: str, source: str,
                           at_ms: int) -> bool: ...

    async def close(self) -> None: ...


def _select(columns: Sequence[str]) -> str:
    unknown = set(columns) - set(NAMES)
    if unknown:
        raise ValueError(f"not ledger columns: {sorted(unknown)}")
    return ", ".join(columns)


def _placeholders(style: str) -> str:
    return ", ".join("?" if style == "qmark" else f"${i}" for i in range(1, len(NAMES) + 1))


class SqliteLedger:
    """The embedded ledger: one SQLite file, WAL journal, one connection (aiosqlite runs it on a thread)."""

    def __init__(self, path: Path):
        self.path = path
        self.url_for_humans = f"sqlite file {path}"
        self._db: Any = None
        self._insert = (f"INSERT OR IGNORE INTO {TABLE} ({', '.join(NAMES)}) "
                        f"VALUES ({_placeholders('qmark')})")

    async def open(self) -> None:
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, timeout=5.0)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("BEGIN IMMEDIATE")
            await db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, "
                             "description TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)")
            async with db.execute(f"SELECT version FROM {MIGRATIONS_TABLE}") as cursor:
                done = {row[0] for row in await cursor.fetchall()}
            for version, description, statements in MIGRATIONS:
                if version not in done:
                    for statement in statements("sqlite"):
                        await db.execute(statement)
                    await db.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?)",
                                     (version, description, int(time.time() * 1000)))
            await db.commit()
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def insert(self, rows: Sequence[tuple[Any, ...]], texts: Sequence[TextRow] = ()) -> None:
        await self._db.executemany(self._insert, rows)
        if texts:
            await self._db.executemany(f"INSERT OR IGNORE INTO {TEXTS_TABLE} ({_TEXT_COLUMNS}) VALUES (?, ?, ?, ?)",
                                       texts)
        await self._db.commit()

    async def kept_texts(self, decision_ids: Sequence[str]) -> dict[str, str]:
        """The kept conversations (JSON) of those of `decision_ids` that have one."""
        out: dict[str, str] = {}
        for start in range(0, len(decision_ids), 500):
            chunk = list(decision_ids[start:start + 500])
            marks = ", ".join("?" * len(chunk))
            async with self._db.execute(f"SELECT decision_id, conversation FROM {TEXTS_TABLE} "
                                        f"WHERE decision_id IN ({marks})", chunk) as cursor:
                out.update({str(d): str(c) for d, c in await cursor.fetchall()})
        return out

    async def examples(self) -> list[tuple[str, str, float]]:
        """(conversation JSON, serving model, feedback score) of every kept conversation with feedback."""
        async with self._db.execute(EXAMPLES_SQL) as cursor:
            return [(str(c), str(m), float(s)) for c, m, s in await cursor.fetchall()]

    async def purge_texts(self, now_ms: int) -> int:
        """Delete the conversations past their retention; how many."""
        cursor = await self._db.execute(f"DELETE FROM {TEXTS_TABLE} WHERE expires_at_ms <= ?", (now_ms,))
        await self._db.commit()
        return cursor.rowcount

    async def count(self) -> int:
        async with self._db.execute(f"SELECT count(*) FROM {TABLE}") as cursor:
            row = await cursor.fetchone()
        return int(row[0])

    async def rows(self, columns: Sequence[str], since_ms: int, until_ms: int) -> list[tuple[Any, ...]]:
        """`columns` of the requests that ended in [since_ms, until_ms), oldest first."""
        async with self._db.execute(f"SELECT {_select(columns)} FROM {TABLE} WHERE ended_at_ms >= ? AND "
                                    "ended_at_ms < ? ORDER BY ended_at_ms", (since_ms, until_ms)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def request_facts(self, decision_id: str) -> RequestFacts | None:
        async with self._db.execute(f"SELECT {_FACT_COLUMNS} FROM {TABLE} WHERE decision_id = ?",
                                    (decision_id,)) as cursor:
            row = await cursor.fetchone()
        return dict(zip(_FACT_COLUMNS.split(", "), row, strict=True)) if row else None

    async def add_feedback(self, decision_id: str, score: float, label: str, comment: str, source: str,
                           at_ms: int) -> bool:
        cursor = await self._db.execute(f"INSERT OR IGNORE INTO {FEEDBACK_TABLE} ({_FEEDBACK_COLUMNS}) "
                                        "VALUES (?, ?, ?, ?, ?, ?)",
                                        (decision_id, score, label, comment, source, at_ms))
        await self._db.commit()
        return cursor.rowcount == 1

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


class PostgresLedger:
    """The production ledger: PostgreSQL through an asyncpg pool, in the schema `?schema=` names (default public)."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.schema = query.pop("schema", "public")
        if not _SCHEMA_NAME.match(self.schema):
            raise ValueError(f"ledger schema {self.schema!r} must match {_SCHEMA_NAME.pattern}")
        self._dsn = urlunsplit(parts._replace(query=urlencode(query)))
        # Never the password: this goes into logs and errors.
        host = parts.hostname or "localhost"
        self.url_for_humans = f"postgresql://{host}:{parts.port or 5432}{parts.path} (schema {self.schema})"
        self._timeout_s = timeout_s
        self._pool: Any = None
        self._insert = (f"INSERT INTO {TABLE} ({', '.join(NAMES)}) VALUES ({_placeholders('numeric')}) "
                        "ON CONFLICT (decision_id) DO NOTHING")

    async def open(self) -> None:
        import asyncpg

        pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2, timeout=self._timeout_s,
                                         command_timeout=self._timeout_s,
                                         server_settings={"search_path": self.schema, "application_name":
                                                          "routemesh-telemetry"})
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                # One migrator at a time across replicas; the lock ends with the transaction.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"routemesh-ledger:{self.schema}")
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, "
                                   "description TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)")
                done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")}
                for version, description, statements in MIGRATIONS:
                    if version not in done:
                        for statement in statements("postgres"):
                            await conn.execute(statement)
                        await conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES ($1, $2, $3)",
                                           version, description, int(time.time() * 1000))
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def insert(self, rows: Sequence[tuple[Any, ...]], texts: Sequence[TextRow] = ()) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(self._insert, rows)
            if texts:
                await conn.executemany(f"INSERT INTO {TEXTS_TABLE} ({_TEXT_COLUMNS}) VALUES ($1, $2, $3, $4) "
                                       "ON CONFLICT (decision_id) DO NOTHING", texts)

    async def kept_texts(self, decision_ids: Sequence[str]) -> dict[str, str]:
        async with self._pool.acquire() as conn:
            records = await conn.fetch(f"SELECT decision_id, conversation FROM {TEXTS_TABLE} "
                                       "WHERE decision_id = ANY($1::text[])", list(decision_ids))
        return {str(r[0]): str(r[1]) for r in records}

    async def examples(self) -> list[tuple[str, str, float]]:
        async with self._pool.acquire() as conn:
            return [(str(r[0]), str(r[1]), float(r[2])) for r in await conn.fetch(EXAMPLES_SQL)]

    async def purge_texts(self, now_ms: int) -> int:
        async with self._pool.acquire() as conn:
            status = await conn.execute(f"DELETE FROM {TEXTS_TABLE} WHERE expires_at_ms <= $1", now_ms)
        return int(status.rpartition(" ")[2] or 0)

    async def count(self) -> int:
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}"))

    async def rows(self, columns: Sequence[str], since_ms: int, until_ms: int) -> list[tuple[Any, ...]]:
        async with self._pool.acquire() as conn:
            records = await conn.fetch(f"SELECT {_select(columns)} FROM {TABLE} WHERE ended_at_ms >= $1 AND "
                                       "ended_at_ms < $2 ORDER BY ended_at_ms", since_ms, until_ms)
        return [tuple(record) for record in records]

    async def request_facts(self, decision_id: str) -> RequestFacts | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT {_FACT_COLUMNS} FROM {TABLE} WHERE decision_id = $1", decision_id)
        return dict(row) if row else None

    async def add_feedback(self, decision_id: str, score: float, label: str, comment: str, source: str,
                           at_ms: int) -> bool:
        async with self._pool.acquire() as conn:
            status = await conn.execute(f"INSERT INTO {FEEDBACK_TABLE} ({_FEEDBACK_COLUMNS}) "
                                        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (decision_id) DO NOTHING",
                                        decision_id, score, label, comment, source, at_ms)
        return status.endswith(" 1")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout_s)
            except (TimeoutError, OSError):
                pool.terminate()


def ledger_store(url: str) -> LedgerStore:
    """The store a --ledger-url names (ValueError otherwise): postgresql://..., or SQLite as SQLAlchemy writes
    it, sqlite:///relative/path or sqlite:////absolute/path, or a bare file path."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SqliteLedger(Path(url))
    if scheme in ("postgres", "postgresql"):
        return PostgresLedger(url)
    if scheme == "sqlite" and rest.startswith("/") and rest != "/":
        return SqliteLedger(Path(rest[1:]))
    raise ValueError("the ledger URL must be sqlite:///PATH, sqlite:////ABSOLUTE/PATH or postgresql://..., "
                     f"got {scheme}://...")
