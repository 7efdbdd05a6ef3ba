"""Per-table statistics before and after cleanup: live rows, dead tuples, sizes, bloat estimates.

Bloat is *estimated* from the catalog (no pgstattuple, no superuser): the expected heap size is
``reltuples × (tuple header + line pointer + Σ avg_width from pg_stats) / fillfactor`` and the
estimate is ``1 − expected / actual``. Indexes (btree on plain columns) are estimated the same way
with an index-tuple header. ``None`` means "not enough statistics" (run ANALYZE). Partitioned
tables sum their leaf partitions.
"""

from __future__ import annotations

from typing import Any

TUPLE_OVERHEAD = 24 + 4  # heap tuple header + line pointer
INDEX_OVERHEAD = 8 + 4  # index tuple header + line pointer

_RELS = """
SELECT coalesce((SELECT array_agg(t.relid::oid) FROM pg_partition_tree(c.oid) t WHERE t.isleaf), ARRAY[c.oid])
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s
"""
_TABLE = """
SELECT sum(greatest(c.reltuples, 0))::bigint, sum(coalesce(s.n_live_tup, 0))::bigint,
       sum(coalesce(s.n_dead_tup, 0))::bigint, sum(pg_relation_size(c.oid))::bigint,
       sum(pg_table_size(c.oid))::bigint, sum(pg_indexes_size(c.oid))::bigint,
       sum(greatest(c.reltuples, 0) * (%(ovh)s + coalesce(w.width, 'NaN'))
           / (coalesce((SELECT option_value::int FROM pg_options_to_table(c.reloptions)
                        WHERE option_name = 'fillfactor'), 100) / 100.0))
FROM pg_class c
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
LEFT JOIN LATERAL (SELECT sum(st.avg_width)::float8 AS width FROM pg_stats st JOIN pg_namespace n2
                   ON n2.nspname = st.schemaname WHERE n2.oid = c.relnamespace AND st.tablename = c.relname
                   HAVING count(*) > 0) w ON true
WHERE c.oid = ANY(%(oids)s)
"""
_INDEXES = """
SELECT i.indexrelid::regclass::text, i.indisvalid, pg_relation_size(i.indexrelid), ic.reltuples,
       am.amname, (SELECT sum(st.avg_width) FROM pg_attribute a JOIN pg_stats st
                   ON st.schemaname = n.nspname AND st.tablename = tc.relname AND st.attname = a.attname
                   WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))::float8,
       (SELECT count(*) FROM unnest(i.indkey) k WHERE k = 0) AS expressions, i.indnatts
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = tc.relnamespace JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = ANY(%(oids)s)
ORDER BY 1
"""


def relations(conn: Any, schema: str, table: str) -> list[int]:
    row = conn.execute(_RELS, [schema, table]).fetchone()
    return list(row[0]) if row else []


def table_stats(conn: Any, schema: str, table: str) -> dict[str, Any]:
    """Statistics of a table now (flushes this backend's pending counters first)."""
    if conn.info.server_version >= 150000:  # PostgreSQL 15+; older servers flush at transaction end
        conn.execute("SELECT pg_stat_force_next_flush()")
    conn.commit()
    conn.execute("SELECT pg_stat_clear_snapshot()")
    oids = relations(conn, schema, table)
    row = conn.execute(_TABLE, {"oids": oids, "ovh": TUPLE_OVERHEAD}).fetchone()
    reltuples, live, dead, heap, table_bytes, index_bytes, expected = row
    conn.commit()
    return {"live_rows": int(live or 0), "dead_tuples": int(dead or 0), "estimated_rows": int(reltuples or 0),
            "table_bytes": int(table_bytes or 0), "index_bytes": int(index_bytes or 0),
            "bloat_estimate": _ratio(expected, heap)}


def index_stats(conn: Any, schema: str, table: str) -> list[dict[str, Any]]:
    oids = relations(conn, schema, table)
    out = []
    for name, valid, size, tuples, am, width, exprs, natts in conn.execute(_INDEXES, {"oids": oids}).fetchall():
        expected = None
        if am == "btree" and not exprs and width is not None and tuples is not None and tuples >= 0:
            expected = float(tuples) * (INDEX_OVERHEAD + _align(width)) / 0.9
        out.append({"index": name, "valid": bool(valid), "bytes": int(size), "columns": int(natts),
                    "bloat_estimate": _ratio(expected, size)})
    conn.commit()
    return out


def invalid_indexes(conn: Any) -> list[str]:
    rows = conn.execute("SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid "
                        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1").fetchall()
    conn.commit()
    return [r[0] for r in rows]


def _align(width: float) -> float:
    return ((width + 7) // 8) * 8


def _ratio(expected: Any, actual: Any) -> float | None:
    if expected is None or actual in (None, 0) or expected != expected:  # NaN: no statistics
        return None
    return round(max(0.0, 1.0 - float(expected) / float(actual)), 3)
