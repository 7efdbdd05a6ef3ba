"""What a backup holds, read from the catalog, and how a restore is compared with it.

One definition, used on both sides: ``backup.postgres`` reads it in the dump's snapshot and writes it
to the manifest; ``backup.verify`` and ``pitstop restore`` read it again in the restored database and
:func:`compare` the two.

* **Tables** are the relations that hold rows of their own and whose rows ``pg_dump`` writes as a
  TABLE DATA entry: plain tables and leaf partitions (relkind ``r``), logged or unlogged. Not counted:
  partitioned parents (``p``: no storage, their rows are their leaves'), views, foreign tables,
  temporary tables, tables that belong to an extension (their rows come from ``CREATE EXTENSION``),
  and materialized views (restored by ``REFRESH``: checked as populated or not, see below). Each is
  named exactly (schema and name apart, any characters) and carries its OID in the source database,
  which is how the archive's table of contents names its TABLE DATA entries.
* **Rows** are counted with ``row_security = off`` (as ``pg_dump`` does): a count is never filtered by a
  row-level security policy. A role that such a policy would filter gets an error naming the table
  (count as a superuser, the table's owner without FORCE ROW LEVEL SECURITY, or a role with BYPASSRLS).
* **Sequences** (identity columns' included): their next value, read before ``pg_dump`` starts. A
  sequence is not transactional, so the dump holds the value ``pg_dump`` read a moment later, which is
  the same or further along; a restored sequence *behind* the manifest would hand out ids that dumped
  rows already use, and is a difference. Cycling sequences are only checked for presence.
* **Large objects**: how many (``pg_largeobject_metadata``, in the snapshot).
* **Materialized views**: whether each is populated.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from ..errors import BackupError

_OURS = """n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND n.nspname !~ '^pg_temp' AND c.relpersistence <> 't'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')"""
LEAF_TABLES = f"""SELECT n.nspname, c.relname, c.oid::bigint FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND {_OURS} ORDER BY 1, 2"""
SEQUENCES = f"""SELECT n.nspname, c.relname, s.seqincrement, s.seqcycle FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S' AND {_OURS} ORDER BY 1, 2"""
MATVIEWS = f"""SELECT n.nspname, c.relname, c.relispopulated FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND {_OURS} ORDER BY 1, 2"""
BATCH = 500  # sequences read per statement


def label(schema: str, name: str) -> str:
    """``schema.name`` as the manifest's ``row_counts`` and the reports write it (unquoted)."""
    return f"{schema}.{name}"


class _Named(BaseModel):
    """A catalog object named exactly: schema and name apart (``schema`` in JSON)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    schema_: str = Field(alias="schema")
    name: str


class TableEntry(_Named):
    oid: int | None = None  # in the source database (the TOC's TABLE DATA entries carry it)
    rows: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema_, self.name)


class SequenceEntry(_Named):
    next_value: int
    increment: int = 1
    cycle: bool = False


class MatviewEntry(_Named):
    populated: bool


class Contents(BaseModel):
    tables: list[TableEntry]
    sequences: list[SequenceEntry] = []
    large_objects: int | None = None
    materialized_views: list[MatviewEntry] = []

    @property
    def row_counts(self) -> dict[str, int]:
        return {label(t.schema_, t.name): int(t.rows or 0) for t in self.tables}

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's ``tables``/``sequences``/``large_objects``/``materialized_views`` and
        ``row_counts`` (the per-table counts as every reader of a manifest knows them)."""
        return {"row_counts": self.row_counts, **self.model_dump(mode="json", by_alias=True)}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Contents:
        """What a manifest says the dump holds (older manifests: their ``row_counts`` only)."""
        if manifest.get("tables") is not None:
            return cls.model_validate({k: manifest.get(k) for k in cls.model_fields if manifest.get(k) is not None})
        tables = [TableEntry(schema_=k.partition(".")[0], name=k.partition(".")[2], rows=int(v))
                  for k, v in (manifest.get("row_counts") or {}).items()]
        return cls(tables=tables)


def _rls_refused(where: str, exc: psycopg.Error) -> BackupError:
    return BackupError(f"cannot count the rows of {where} without row-level security filtering them "
                       f"({str(exc).strip().splitlines()[0]}): count as a superuser, a role with BYPASSRLS, or "
                       "the table's owner when it does not FORCE ROW LEVEL SECURITY")


def no_row_security(conn: Any, local: bool = False) -> None:
    conn.execute("SET LOCAL row_security = off" if local else "SET row_security = off")


def leaf_tables(conn: Any) -> list[TableEntry]:
    return [TableEntry(schema_=s, name=n, oid=int(o)) for s, n, o in conn.execute(LEAF_TABLES).fetchall()]


def count_tables(conn: Any, tables: list[TableEntry]) -> list[TableEntry]:
    """Each table's exact ``count(*)`` (the connection has ``row_security = off``)."""
    out = []
    for t in tables:
        q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.schema_, t.name))
        try:
            row = conn.execute(q).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _rls_refused(label(t.schema_, t.name), exc) from None
        out.append(t.model_copy(update={"rows": int(row[0])}))
    return out


def sequences(conn: Any) -> list[SequenceEntry]:
    found = conn.execute(SEQUENCES).fetchall()
    out: list[SequenceEntry] = []
    for i in range(0, len(found), BATCH):
        chunk = found[i:i + BATCH]
        q = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, last_value, is_called FROM {}").format(sql.Literal(j), sql.Identifier(s, n))
            for j, (s, n, _inc, _cyc) in enumerate(chunk))
        for j, last, called in conn.execute(q).fetchall():
            s, n, inc, cyc = chunk[j]
            out.append(SequenceEntry(schema_=s, name=n, next_value=int(last) + (int(inc) if called else 0),
                                     increment=int(inc), cycle=bool(cyc)))
    return sorted(out, key=lambda e: (e.schema_, e.name))


def large_objects(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0])


def matviews(conn: Any) -> list[MatviewEntry]:
    return [MatviewEntry(schema_=s, name=n, populated=bool(p)) for s, n, p in conn.execute(MATVIEWS).fetchall()]


def read_restored(conn: Any) -> Contents:
    """Everything :func:`compare` needs, from a restored database (a session of its own)."""
    no_row_security(conn)
    return Contents(tables=count_tables(conn, leaf_tables(conn)), sequences=sequences(conn),
                    large_objects=large_objects(conn), materialized_views=matviews(conn))


def compare(expected: Contents, restored: Contents) -> dict[str, dict[str, Any]]:
    """Differences between a manifest and a restored database: ``{what: {manifest, restored}}``, where
    ``what`` is a table's ``schema.name``, ``sequence schema.name``, ``materialized view schema.name`` or
    ``large objects``. Empty when the restore holds exactly what was dumped."""
    diffs: dict[str, dict[str, Any]] = {}
    have = {t.key: t.rows for t in restored.tables}
    want = {t.key: t.rows for t in expected.tables}
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            diffs[label(*key)] = {"manifest": want.get(key), "restored": have.get(key)}
    seqs = {(s.schema_, s.name): s for s in restored.sequences}
    for s in expected.sequences:
        got = seqs.get((s.schema_, s.name))
        ahead = 1 if s.increment > 0 else -1
        behind = got is not None and not s.cycle and (got.next_value - s.next_value) * ahead < 0
        if got is None or behind:
            diffs[f"sequence {label(s.schema_, s.name)}"] = {
                "manifest": s.next_value, "restored": got.next_value if got else None,
                **({"problem": "behind the dumped data: it would hand out ids already in use"} if behind else {})}
    if expected.large_objects is not None and restored.large_objects != expected.large_objects:
        diffs["large objects"] = {"manifest": expected.large_objects, "restored": restored.large_objects}
    views = {(m.schema_, m.name): m.populated for m in restored.materialized_views}
    for m in expected.materialized_views:
        if views.get((m.schema_, m.name)) != m.populated:
            diffs[f"materialized view {label(m.schema_, m.name)}"] = {
                "manifest": "populated" if m.populated else "not populated",
                "restored": None if (m.schema_, m.name) not in views else
                "populated" if views[(m.schema_, m.name)] else "not populated"}
    return diffs
