"""Root file operations on hosts that never follow a link somebody else could have swapped in.

``tuning.logs`` and ``disk.reclaim`` run as root on hosts whose log and temp directories often belong
to an application's user. Whoever can rename an entry of a directory on the way to a file — the file's
own directory *or any directory above it* — can swap it for a symlink at any moment, so a root command
acting on a path checked earlier can be aimed at any file (``truncate`` on /etc/shadow). The rule, as
logrotate's ``su`` directive applies it (CVE-2011-1098): **act with the privileges of whoever controls
the path**, so that a link swapped in yields only what its author could do anyway.

One POSIX-sh session per batch (:data:`SCRIPT`) walks each path from ``/`` and collects who can
replace each entry on the way:

* the owner of every directory traversed;
* in a directory group- or world-writable *with* the sticky bit (``/tmp``), the owner of the entry
  (nobody else may rename it);
* a directory group-writable *without* the sticky bit is refused unless its group is ``root`` or in
  ``trusted_groups`` (Ubuntu's ``/var/log`` is ``root:syslog 0775``); world-writable without the
  sticky bit is always refused.

Symlinks on the way are followed only after their own entry has been accounted for (a root-owned
``/var/log -> /data/log`` is fine); the final component is never a link. Then, when the session runs
as root: nobody but root can change the path → the operation runs as root; exactly one other user →
it runs as that user (``setpriv --reuid --regid --init-groups``, util-linux); two different users →
refused. What the controlling user cannot do itself (read the log, write its directory) is refused,
not forced. Since nothing outside the controlling user can change the path between the walk and the
operation, the file acted on is the file checked. GNU ``find -delete`` (which never follows a link
below its starting point) runs under the same rule for the starting directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..connectors.base import Connection
from ..errors import CommandFailed

# $1 op, $2 stamp, $3 trusted groups (comma-separated), then the op's arguments. One record per
# file on stdout, NUL-terminated: "done PATH", "refused PATH: why", "failed PATH: why"; delete:
# "found SIZE PATH" then "deleted" when the unlink succeeded. Exit 0, or 1 when something failed.
SCRIPT = r'''
op=$1; stamp=$2; trusted=",root,$3,"; shift 3
me=$(id -u); rc=0
ctl() {
  [ "$1" = 0 ] && return 0
  [ -z "$who" ] && { who=$1; return 0; }
  [ "$who" = "$1" ] && return 0
  why="both uid $who and uid $1 can change it"; return 1
}
entry() {
  s=$(stat -c '%u %a %G' -- "$1") || { why="cannot stat $1"; return 1; }
  set -- "$1" "$2" $s
  ctl "$3" || return 1
  m=$(( 0$4 ))
  [ $(( m & 18 )) -eq 0 ] && return 0
  if [ $(( m & 512 )) -ne 0 ]; then
    o=$(stat -c %u -- "$1/$2" 2>/dev/null) || return 0
    ctl "$o"; return
  fi
  if [ $(( m & 2 )) -eq 0 ]; then
    case $trusted in *",$5,"*) return 0 ;; esac
    why="$1 is writable by group $5 (not trusted)"; return 1
  fi
  why="$1 is writable by everyone"; return 1
}
walk() {
  who=""; why=""; cur=""; rest=${1#/}; hops=0
  [ "$me" = 0 ] || return 0
  while [ -n "$rest" ]; do
    case $rest in */*) name=${rest%%/*}; rest=${rest#*/} ;; *) name=$rest; rest="" ;; esac
    case $name in ""|.) continue ;; ..) cur=${cur%/*}; continue ;; esac
    entry "${cur:-/}" "$name" || return 1
    if [ -L "$cur/$name" ]; then
      [ -n "$rest" ] || { why="$cur/$name is a symbolic link"; return 1; }
      hops=$((hops + 1)); [ $hops -le 40 ] || { why="too many symbolic links"; return 1; }
      t=$(readlink -- "$cur/$name") || { why="cannot read the link $cur/$name"; return 1; }
      case $t in /*) cur="" ;; esac
      rest=${t#/}/$rest; continue
    fi
    cur=$cur/$name
  done
  case $2 in
    file) [ -f "$cur" ] && [ ! -L "$cur" ] || { why="not a regular file"; return 1; } ;;
    dir) [ -d "$cur" ] && [ ! -L "$cur" ] || { why="not a directory"; return 1; } ;;
  esac
}
runas() {
  if [ -z "$who" ]; then "$@"; return; fi
  command -v setpriv >/dev/null 2>&1 || { echo "setpriv (util-linux) is missing" >&2; return 3; }
  g=$(getent passwd "$who" | cut -d: -f4)
  if [ -n "$g" ]; then setpriv --reuid="$who" --regid="$g" --init-groups --no-new-privs -- "$@"
  else setpriv --reuid="$who" --regid=65534 --clear-groups --no-new-privs -- "$@"; fi
}
rec() { printf '%s %s\0' "$1" "$2"; }
case $op in
  compress|rotate)
    for f do
      d=${f%/*}; [ -n "$d" ] || d=/
      if [ "$d" != "$lastd" ]; then
        if walk "$d" dir; then dok=1; else dok=0; fi
        lastd=$d; dwho=$who; dwhy=$why
      fi
      who=$dwho; why=$dwhy
      if [ $dok = 0 ] || ! { [ "$me" != 0 ] || entry "$d" "${f##*/}"; }; then rec refused "$f: $why"; continue; fi
      if [ -L "$f" ] || [ ! -f "$f" ]; then rec refused "$f: not a regular file (a link, or swapped)"; continue; fi
      if [ "$me" = 0 ] && [ -z "$who" ] && [ $(( 0$(stat -c %a -- "$d") & 530 )) -gt 512 ]; then
        rec refused "$f: in a shared directory with no owner seen (vanished or root's): not acted on as root"; continue
      fi
      if [ $op = compress ]; then
        out=$(runas sh -c '[ -r "$1" ] && [ -w "${1%/*}" ] || exit 3; exec gzip -f -- "$1"' sh "$f" 2>&1)
      else
        out=$(runas sh -c '[ -r "$1" ] && [ -w "$1" ] && [ -w "${1%/*}" ] || exit 3
          c=$1.$2; if [ -e "$c" ] || [ -L "$c" ]; then echo "$c exists"; exit 4; fi
          cp -p -- "$1" "$c" || { rm -f -- "$c"; exit 5; }
          truncate -s 0 -- "$1" || { rm -f -- "$c"; exit 6; }
          exec gzip -- "$c"' sh "$f" "$stamp" 2>&1)
      fi
      r=$?; out=$(printf '%s' "$out" | tr '\n\0' '  ' | cut -c1-300)
      if [ $r -eq 0 ]; then rec done "$f"
      elif [ $r -eq 3 ]; then
        rec refused "$f: uid ${who:-$me}, who controls its path, cannot read it or write its directory $out"
      else rec failed "$f: exit $r $out"; rc=1; fi
    done ;;
  delete)
    d=$1; shift
    walk "$d" dir || { rec refused "$d: $why"; exit 0; }
    runas find "$d" -xdev -type f "$@" -printf 'found %s %p\0' -delete -printf 'deleted\0'; exit ;;
  check)
    d=$1; n=$2
    while [ ! -e "$d" ] && [ ! -L "$d" ]; do n=${d##*/}; d=${d%/*}; [ -n "$d" ] || d=/; done
    walk "$d" dir || { echo "$d: $why" >&2; exit 3; }
    if [ -n "$n" ] && [ "$me" = 0 ]; then entry "$d" "$n" || { echo "$d/$n: $why" >&2; exit 3; }; fi
    if [ -n "$who" ] && [ "$who" != "${SUDO_UID:-x}" ]; then
      echo "$d: uid $who can change it (root would act on whatever that user puts there)" >&2; exit 3
    fi ;;
  *) echo "unknown operation $op" >&2; exit 2 ;;
esac
exit $rc
'''


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deleted: list[tuple[int, str]] = field(default_factory=list)


def _argv(op: str, args: Sequence[str], stamp: str = "-", trusted_groups: Sequence[str] = ()) -> list[str]:
    return ["sh", "-c", SCRIPT, "pitstop-safefile", op, stamp or "-", ",".join(trusted_groups), *args]


def _parse(stdout: str, out: Outcome) -> Outcome:
    found: tuple[int, str] | None = None
    for rec in stdout.split("\0"):
        word, _, rest = rec.partition(" ")
        if word == "found":  # find's record of a file, followed by "deleted" once it is gone
            size, _, path = rest.partition(" ")
            found = (int(size), path)
        elif word == "deleted" and found:
            out.deleted.append(found)
            found = None
        elif word in ("done", "refused", "failed"):
            getattr(out, word).append(rest)
        elif rec.strip():
            out.failed.append(rec.strip()[:300])
    return out


def apply(conn: Connection, op: str, files: list[str], stamp: str = "", sudo: bool = False,
          trusted_groups: Sequence[str] = ()) -> Outcome:
    """``op`` (``compress`` or ``rotate``) on ``files`` (real paths on the host), under the rules above."""
    out = Outcome()
    if not files:
        return out
    res = conn.run(_argv(op, files, stamp, trusted_groups), check=False, sudo=sudo)
    _parse(res.stdout, out)
    if res.exit_code not in (0, 1) and not out.failed:
        out.failed.append(f"batch exited {res.exit_code}: {res.stderr.strip()[-200:]}")
    return out


def delete(conn: Connection, directory: str, tests: Sequence[str], sudo: bool = False,
           trusted_groups: Sequence[str] = ()) -> tuple[Outcome, list[str]]:
    """``find DIRECTORY -xdev -type f TESTS -delete`` with the privileges of whoever controls
    ``directory`` (a real path on the host): what was deleted or refused, and find's complaints."""
    argv = _argv("delete", [directory, *tests], trusted_groups=trusted_groups)
    res = conn.run(argv, check=False, sudo=sudo)
    if res.exit_code == 3:  # the controlling user cannot be taken on (no setpriv)
        return Outcome(refused=[f"{directory}: {res.stderr.strip()[-200:]}"]), []
    if res.exit_code not in (0, 1):
        raise CommandFailed(["find", directory, *tests, "-delete"], res.exit_code, res.stderr,
                            getattr(conn, "name", ""))
    return _parse(res.stdout, Outcome()), [line for line in res.stderr.splitlines() if line.strip()]


def check_argv(directory: str, new_name: str = "") -> list[str]:
    """A command that exits 0 when root may create or replace ``new_name`` in ``directory`` (real
    path) and act on it: only root, or the user sudo was called by, can change that path. Otherwise
    exit 3 with the reason on stderr."""
    return _argv("check", [directory, new_name])


def check(conn: Connection, directory: str, new_name: str = "", sudo: bool = False) -> str | None:
    """None when :func:`check_argv` passes, else why not."""
    res = conn.run(check_argv(directory, new_name), check=False, sudo=sudo)
    if res.exit_code == 0:
        return None
    return res.stderr.strip()[-300:] or f"{shlex.join(['check', directory])} exited {res.exit_code}"
