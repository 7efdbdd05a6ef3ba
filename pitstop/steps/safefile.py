"""Compressing and rotating files in directories other users may control, without following links.

``tuning.logs`` runs as root on hosts whose log directories often belong to the application's user.
Whoever owns a directory can swap a file in it for a symlink at any moment, so a root command that
acts on a path listed earlier can be pointed at any file (``truncate`` on /etc/shadow). The rule, as
logrotate's ``su`` directive applies it: **act with the privileges of whoever controls the
directory**, so that a swapped link yields only what its author could do anyway.

One shell session per batch (POSIX sh, util-linux ``setpriv``), per file:

* a path that is a symlink (or whose directory is one), or not a regular file, is skipped;
* when the session is root and the file's directory belongs to another user, the operation runs as
  that user (``setpriv --reuid/--regid --clear-groups``);
* a root-owned directory writable by group or others (``/tmp``-like, usually sticky) is shared: the
  operation runs as the *file's* owner, and a root-owned file there is refused;
* only in a root-owned directory nobody else can write does it run as root.

New files are created exclusively (``set -C``: an existing name or a planted link is an error, never
followed). A file that cannot be handled safely is reported ``refused`` with the reason and left
alone; the step says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..connectors.base import Connection

SCRIPT = r'''
op=$1; stamp=$2; shift 2
me=$(id -u); rc=0
for f do
  d=${f%/*}; [ -n "$d" ] || d=/
  if [ -L "$f" ] || [ ! -f "$f" ] || [ -L "$d" ]; then
    echo "refused $f: not a regular file (link or swapped)"; continue
  fi
  du=$(stat -c %u -- "$d") && dg=$(stat -c %g -- "$d") && dm=$(stat -c %a -- "$d") ||
    { echo "refused $f: cannot stat its directory"; continue; }
  fu=$(stat -c %u -- "$f") && fg=$(stat -c %g -- "$f") || { echo "refused $f: vanished"; continue; }
  as=""
  if [ "$me" = 0 ]; then
    if [ "$du" != 0 ]; then as="$du $dg"
    elif [ $(( 0$dm & 022 )) -ne 0 ]; then
      if [ "$fu" = 0 ]; then echo "refused $f: root-owned file in a directory others can write"; continue; fi
      as="$fu $fg"
    fi
  fi
  if [ -n "$as" ]; then
    command -v setpriv >/dev/null 2>&1 || { echo "refused $f: setpriv (util-linux) is missing"; continue; }
    set -- setpriv --reuid=${as% *} --regid=${as#* } --clear-groups --
  else
    set --
  fi
  case $op in
    compress) "$@" gzip -f -- "$f" ;;
    rotate) "$@" sh -c 'set -C; cp -p -- "$1" "$1.$2" && truncate -s 0 -- "$1" && gzip -- "$1.$2"' sh "$f" "$stamp" ;;
    *) echo "refused $f: unknown operation"; continue ;;
  esac
  r=$?
  if [ $r -eq 0 ]; then echo "done $f"; else echo "failed $f: exit $r"; rc=1; fi
done
exit $rc
'''


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def apply(conn: Connection, op: str, files: list[str], stamp: str = "", sudo: bool = False) -> Outcome:
    """``op`` (``compress`` or ``rotate``) on ``files``, under the rules above."""
    out = Outcome()
    if not files:
        return out
    res = conn.run(["sh", "-c", SCRIPT, "sh", op, stamp or "-", *files], check=False, sudo=sudo)
    for line in res.stdout.splitlines():
        word, _, rest = line.partition(" ")
        {"done": out.done, "refused": out.refused, "failed": out.failed}.get(word, out.failed).append(rest)
    if res.exit_code not in (0, 1) and not out.failed:
        out.failed.append(f"batch exited {res.exit_code}: {res.stderr.strip()[-200:]}")
    return out
