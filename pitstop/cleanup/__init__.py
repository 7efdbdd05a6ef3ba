"""Database cleanup that never hurts live traffic.

``rules``       retention conditions (identifiers via ``sql.Identifier``, values as parameters), table facts
``pacing``      profiles, the adaptive batch controller and the feedback monitor (pg_locks / pg_stat_activity)
``progress``    the resumable progress table (cutoff fixed on first start, counters updated per batch)
``purge``       the batched purge by primary-key range or ctid block range
``bounds``      which leaf partitions hold only expired rows, from the catalog (never from names)
``partitions``  detach + (archive) + drop of those leaves, each act re-checked against the catalog
``fkeys``       foreign keys into a purged table: blockers refused up front, cascades counted
``outcome``     the archive manifest and the per-rule result (``cleanup.purged``)
``archive``     purged rows to storage as gzip CSV (COPY ... TO STDOUT)
``metrics``     per-table statistics before/after (live/dead tuples, sizes, bloat estimate)
``maintenance`` VACUUM (ANALYZE), REINDEX CONCURRENTLY, invalid indexes, VACUUM FULL / CLUSTER
The steps themselves are registered in ``pitstop.cleanup.steps``.
"""
