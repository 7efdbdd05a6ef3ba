#!/usr/bin/env bash
# Install the system packages the test-suite needs, only when they are missing.
set -euo pipefail
need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v sudo >/dev/null 2>&1 || need+=(sudo)  # tests/fleet: the `sudo -n --` prefix
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# an older pg_dump, for the backup version-mismatch test (tests/backup)
[ -x /usr/lib/postgresql/15/bin/pg_dump ] || need+=(postgresql-client-15)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)  # Prefect server test DB (pg_trgm)
command -v /usr/sbin/nginx >/dev/null 2>&1 || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
