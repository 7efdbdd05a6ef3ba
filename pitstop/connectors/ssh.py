"""SSH transport over paramiko: one connection per host per run, opened on first use.

* Host keys are verified against the configured known_hosts files (paramiko ``RejectPolicy``); an
  unknown or changed key raises :class:`HostKeyError` naming the host and the fingerprint seen.
* Commands are argument lists joined with :func:`shlex.join`; nothing from config reaches the remote
  shell unquoted. ``sudo`` runs them as ``sudo -n -- <argv>`` (never prompts).
* ``put`` is atomic: the data goes to a temporary name in the target directory, gets its mode, then
  is renamed over the target, so readers never see half a file. By default this is one exec channel
  (``sh -c`` with quoted arguments, data on stdin; see :data:`PUT_SCRIPT`), much cheaper than
  starting the SFTP subsystem; ``put_via = "sftp"`` keeps the SFTP way (``posix-rename``).
  ``get``/``exists``/``remove`` use SFTP.
* ``run_batch`` runs several ops (commands and at most one put) in one exec session
  (:mod:`.ssh_batch`).
* The paramiko transport is tuned for fleets in :mod:`.ssh_transport` (AES-GCM preferred, buffered
  reads, no timer thread per connection); protocol and checks are paramiko's.
* A command that runs out of time is stopped on the host, children included (:mod:`.ssh_pid`),
  and reported with exit code 124.
* Transient connect errors (reset, refused, timeout, ``MaxStartups`` drops seen as a missing banner)
  are retried with exponential backoff and jitter; authentication and host-key failures are not,
  and a command is never re-run.
"""

from __future__ import annotations

import collections
import os
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..fleet.hostkeys import RejectUnknown, changed_key_error, entry_name, known_hosts  # first: defers invoke

# isort: split
import paramiko
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..config import HostConfig, SshSettings
from ..errors import CommandFailed, ConnectorError, HostKeyError, PitstopError, TransientError
from ..fleet.inventory import SshTarget, resolve_target
from ..model import CommandResult
from .base import TAIL, BatchOp, Connection
from .ssh_batch import Batch, OpClock, PartialTimeout
from .ssh_pid import STOP_SCRIPT, reporting_pid, split_pid
from .ssh_transport import BufferedSocket, FleetClient, FleetTransport

_keys: dict[str, paramiko.PKey | None] = {}  # None: protected by a passphrase
_keys_lock = threading.Lock()

# The exec-channel put: data on stdin into a temporary file next to the target, written with its
# mode by `install` (one process for write + mode), then renamed over the target (rename(2) in one
# directory: atomic). $1 tmp, $2 target, $3 octal mode, $4 the target's directory (created with the
# default umask when missing, like the SFTP put).
PUT_SCRIPT = (
    '[ -d "$4" ] || mkdir -p -- "$4" || exit; umask 077; '
    'if [ -d "$2" ]; then echo "$2: is a directory" >&2; exit 1; fi; '
    'if install -m "$3" -- /dev/stdin "$1" && mv -f -- "$1" "$2"; then exit 0; fi; '
    'rc=$?; rm -f -- "$1"; exit "$rc"'
)

SSH_HINT = "check that the host is up, its address and port (config or inventory) and that sshd listens there"


class AuthError(ConnectorError, PermissionError):
    """SSH authentication failed (never retried)."""


def _load_key(path: str) -> paramiko.PKey | None:
    """A private key file, parsed once per process (a fleet shares one key); ``None`` when the file
    is protected by a passphrase (pitstop never asks for one: such a key is used through the agent)."""
    with _keys_lock:
        if path not in _keys:
            try:
                _keys[path] = paramiko.PKey.from_path(path)
            except paramiko.PasswordRequiredException:
                _keys[path] = None
            except TypeError as exc:  # cryptography's "Key is password-protected, but password was not provided"
                if "password" not in str(exc).lower():
                    raise ConnectorError(f"cannot load SSH key {path}: {exc}") from None
                _keys[path] = None
            except (OSError, paramiko.SSHException) as exc:
                raise ConnectorError(f"cannot load SSH key {path}: {exc}") from None
        return _keys[path]


def _agent_available() -> bool:
    return bool(os.environ.get("SSH_AUTH_SOCK"))


def is_transient(exc: BaseException) -> bool:
    """Worth another connect attempt: resets, refusals, timeouts, dropped banners (MaxStartups)."""
    if isinstance(exc, PitstopError):  # our own errors: host keys, auth, config ... only TransientError
        return isinstance(exc, TransientError)
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    if isinstance(exc, TransientError | ConnectionError | TimeoutError | socket.timeout | EOFError):
        return True
    if isinstance(exc, paramiko.SSHException):
        msg = str(exc).lower()
        # "no existing session": the transport died during the handshake (a server dropping the
        # connection, as sshd does over MaxStartups, surfaces here when auth starts)
        return any(s in msg for s in ("banner", "reset", "eof", "timed out", "closed", "refused",
                                      "no existing session"))
    return False


class SshConnection(Connection):
    target: SshTarget
    history: collections.deque[dict[str, Any]]
    _client: paramiko.SSHClient | None
    _jump: SshConnection | None
    _sftp: paramiko.SFTPClient | None
    on_retry: Callable[..., None] | None

    def __init__(self, name: str, host: HostConfig, settings: SshSettings, hosts: dict[str, HostConfig] | None = None):
        self._init_state(name, settings, resolve_target(name, host, settings, hosts))

    @classmethod
    def for_target(cls, target: SshTarget, settings: SshSettings) -> SshConnection:
        """A connection to an already resolved target (a jump host): the same state as __init__ builds."""
        conn = cls.__new__(cls)
        conn._init_state(target.label, settings, target)
        return conn

    def _init_state(self, name: str, settings: SshSettings, target: SshTarget) -> None:
        self.name, self.settings, self.target = name, settings, target
        self.history = collections.deque(maxlen=50)
        self._client = None
        self._jump = None
        self._sftp = None
        self._lock = threading.RLock()
        self.connects = 0
        self.on_retry = None  # the run's audit: one `retry` event per retry

    # -- connection -------------------------------------------------------------------------------------
    def _transport(self) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                self._drop()
                retrying = Retrying(
                    stop=stop_after_attempt(self.settings.connect_retries),
                    wait=wait_exponential_jitter(initial=0.2, max=5, jitter=0.5),
                    retry=retry_if_exception(is_transient),
                    reraise=True,
                    before_sleep=self._note_retry,
                )
                try:
                    self._client = retrying(self._connect)
                except PitstopError:
                    raise
                except TimeoutError:
                    raise TransientError(
                        f"{self.name}: SSH connect to {self.target.describe()} timed out after "
                        f"{self.settings.connect_retries} attempt(s); {SSH_HINT}"
                    ) from None
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    raise ConnectorError(
                        f"{self.name}: cannot connect over SSH to {self.target.describe()} "
                        f"({exc or type(exc).__name__}); {SSH_HINT}"
                    ) from None
                transport = self._client.get_transport()
                assert transport is not None
            return transport

    def _note_retry(self, state: Any) -> None:
        if self.on_retry is not None:
            exc = state.outcome.exception() if state.outcome else None
            self.on_retry(what="ssh.connect", host=self.name, attempt=state.attempt_number,
                          error=type(exc).__name__, wait_s=round(state.next_action.sleep, 3))

    def _sock(self) -> socket.socket | paramiko.Channel:
        t, timeout = self.target, self.settings.connect_timeout
        if t.jump is not None:
            if self._jump is None:
                self._jump = SshConnection.for_target(t.jump, self.settings)
            try:
                return self._jump._transport().open_channel(
                    "direct-tcpip", (t.hostname, t.port), ("127.0.0.1", 0), timeout=timeout
                )
            except paramiko.ChannelException as exc:
                raise ConnectorError(
                    f"{self.name}: jump host {t.jump.label} refused to open a channel to {t.hostname}:{t.port}: {exc}"
                ) from None
        try:  # getaddrinfo encodes a str host with the idna codec, whose first use imports ~15 ms of tables
            host: str | bytes = t.hostname.encode("ascii")
        except UnicodeEncodeError:
            host = t.hostname
        sock = socket.create_connection((host, t.port), timeout=timeout)  # type: ignore[arg-type]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return BufferedSocket(sock)  # type: ignore[return-value]

    def _connect(self) -> paramiko.SSHClient:
        known = getattr(self, "_permanent", None)
        if known is not None:  # refused before in this run (auth, host key): asking again changes nothing
            raise known
        try:
            return self._connect_once()
        except (AuthError, HostKeyError) as exc:
            self._permanent = exc
            raise

    def _connect_once(self) -> paramiko.SSHClient:
        t, s = self.target, self.settings
        self.connects += 1
        client = FleetClient()
        files = [str(p) for p in s.known_hosts]
        name = entry_name(t.hostname, t.port)
        for keytype, key in (known_hosts(files).lookup(name) or {}).items():
            client.get_host_keys().add(name, keytype, key)
        client.set_missing_host_key_policy(RejectUnknown(self.name, files))
        pkey = _load_key(t.identity_files[0]) if t.identity_files else None
        if t.identity_files and pkey is None and not (s.agent and _agent_available()):
            raise AuthError(
                f"{self.name}: SSH key {t.identity_files[0]} is protected by a passphrase; load it into the "
                "agent (ssh-add) and set ssh.agent: true with SSH_AUTH_SOCK set, or use a key without one"
            )
        sock = self._sock()
        try:
            client.connect(
                t.hostname,
                port=t.port,
                username=t.user,
                pkey=pkey,
                key_filename=list(t.identity_files[1:]) or None,  # type: ignore[arg-type]
                sock=sock,
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
                allow_agent=s.agent,
                look_for_keys=False,
                transport_factory=FleetTransport,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise changed_key_error(self.name, name, exc.key, exc.expected_key) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthError(f"{self.name}: authentication as {t.user}@{t.hostname}:{t.port} failed: {exc}") from None
        except paramiko.SSHException as exc:
            client.close()
            if "no authentication methods" in str(exc).lower():
                raise AuthError(
                    f"{self.name}: no SSH key for {t.user}@{t.hostname}:{t.port} (set identity_file, "
                    "IdentityFile in the SSH config, or use an agent)"
                ) from None
            raise
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        if s.keepalive:
            transport.set_keepalive(s.keepalive)
        return client

    def _drop(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._client is not None:
            self._client.close()
        self._sftp = self._client = None

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._jump is not None:
                self._jump.close()
                self._jump = None

    # -- commands ---------------------------------------------------------------------------------------
    def path(self, host_path: str) -> str:
        if self.target.root:
            return self.target.root.rstrip("/") + "/" + host_path.lstrip("/")
        return host_path

    def sudo_argv(self, argv: list[str], sudo: bool = False) -> list[str]:
        if not argv:
            raise ConnectorError(f"{self.name}: empty command")
        return ["sudo", "-n", "--", *argv] if (sudo or self.target.sudo) else list(argv)

    def command_line(self, argv: list[str], sudo: bool = False) -> str:
        return shlex.join(self.sudo_argv(argv, sudo))

    def run(
        self,
        argv: list[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
        sudo: bool = False,
    ) -> CommandResult:
        cmd = reporting_pid(self.sudo_argv(argv, sudo))
        timeout = timeout or self.settings.command_timeout
        start = time.monotonic()
        try:
            code, out, err = self._call(cmd, input, start + timeout, sudo=sudo or self.target.sudo)
        except TimeoutError:
            self.history.append({"argv": argv, "exit_code": 124, "stderr_tail": f"timed out after {timeout}s"})
            raise CommandFailed(argv, 124, f"timed out after {timeout}s", self.name) from None
        result = self._record(argv, code, out, err, time.monotonic() - start)
        if check and code != 0:
            raise CommandFailed(argv, code, result.stderr, self.name)
        return result

    def _record(self, argv: list[str], code: int, out: bytes, err: bytes, duration: float) -> CommandResult:
        result = CommandResult(argv=argv, exit_code=code, stdout=out.decode(errors="replace"),
                               stderr=err.decode(errors="replace"), duration_s=duration)
        self.history.append({"argv": argv, "exit_code": code, "stdout_tail": result.stdout[-TAIL:],
                             "stderr_tail": result.stderr[-TAIL:], "duration_s": round(duration, 3)})
        return result

    # -- batches: several ops in one session (pitstop.connectors.ssh_batch) --------------------------------
    def run_batch(self, ops: Sequence[BatchOp]) -> list[CommandResult | None]:
        """The ops in one exec session: one remote ``sh`` runs each op in its own subshell; see
        :class:`~pitstop.connectors.ssh_batch.Batch` for the script and how its output is split."""
        if not ops:
            return []
        batch = Batch(self, ops)
        try:
            code, out, err = self._call(batch.command, batch.data, batch.clock, sudo=batch.sudo)
        except PartialTimeout as exc:
            out, err, code = exc.out, exc.err, 124
        return batch.results(out, err, code)

    def _call(
        self, cmd: str, data: bytes | None, deadline: float | OpClock, *, sudo: bool = False
    ) -> tuple[int, bytes, bytes]:
        """Run one quoted command line on its own exec channel: (exit code, stdout, stderr). A command
        line that reports its pid first on stderr (:func:`reporting_pid`; stripped here) is stopped
        on the host when it runs out of time."""
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=self.settings.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectorError(f"{self.name}: cannot open a session: {exc or type(exc).__name__}") from None
        try:
            return self._exec(chan, cmd, data, deadline, sudo)
        finally:
            chan.close()

    def _exec(
        self, chan: paramiko.Channel, cmd: str, data: bytes | None, deadline: float | OpClock, sudo: bool = False
    ) -> tuple[int, bytes, bytes]:
        def due() -> float:
            return deadline if isinstance(deadline, float) else deadline.due(out)

        chan.exec_command(cmd)
        if data:
            chan.sendall(data)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        try:
            code, out_b, err_b = self._read(chan, out, err, due)
        except PartialTimeout as exc:
            pid, exc.err = split_pid(exc.err)
            if pid is not None:
                self._stop_remote(pid, sudo)
            raise
        return code, out_b, split_pid(err_b)[1]

    def _stop_remote(self, pid: int, sudo: bool) -> None:
        """A timed-out command must not keep running (holding apt's lock, restarting a service
        later); closing the channel alone leaves a quiet command running, and sshd refuses the SSH
        ``signal`` request for root logins. On a second channel: TERM to the command's process group
        (the session sshd started: the command and its children; the dead-man watcher has its own),
        KILL what is left after 2 s. Best effort: a lost connection has already hung up."""
        argv = ["sh", "-c", STOP_SCRIPT, "pitstop-stop", str(pid)]
        try:
            self._call(self.command_line(argv, sudo), None, time.monotonic() + 10)
        except (PitstopError, TimeoutError, OSError, EOFError, paramiko.SSHException):
            pass

    def _read(
        self, chan: paramiko.Channel, out: bytearray, err: bytearray, due: Callable[[], float]
    ) -> tuple[int, bytes, bytes]:
        # Block in paramiko's buffers (no pipe, no select): read stdout to EOF, draining stderr on every
        # wake-up and at least every 0.2 s so a command writing much to stderr never stalls on a full
        # window; then the rest of stderr.
        for read, buf in ((chan.recv, out), (chan.recv_stderr, err)):
            while True:
                remaining = due() - time.monotonic()
                if remaining <= 0:
                    raise PartialTimeout(bytes(out), bytes(err))
                chan.settimeout(min(remaining, 0.2))
                try:
                    chunk = read(65536)
                except TimeoutError:  # socket.timeout: nothing yet
                    chunk = None
                if buf is out:
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                if chunk == b"":
                    break
                if chunk:
                    buf += chunk
        if not chan.status_event.wait(max(0.0, due() - time.monotonic())):
            raise PartialTimeout(bytes(out), bytes(err))
        return chan.recv_exit_status(), bytes(out), bytes(err)

    # -- files ------------------------------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            transport = self._transport()
            if self._sftp is None or self._sftp.sock.closed:
                self._sftp = paramiko.SFTPClient.from_transport(transport)
                assert self._sftp is not None
            return self._sftp

    put_via = "exec"  # or "sftp"

    def put(self, host_path: str, data: bytes, mode: int = 0o644, *, sudo: bool = False) -> None:
        """Write ``data`` to ``host_path`` atomically (temporary name + rename), with ``mode``."""
        target, tmp, directory = self._put_names(host_path)
        if self.put_via == "sftp" and not (sudo or self.target.sudo):
            return self._put_sftp(target, tmp, data, mode)
        cmd = reporting_pid(self.sudo_argv(self._put_argv(target, tmp, directory, mode), sudo))
        try:
            code, _, err = self._call(cmd, data, time.monotonic() + self.settings.command_timeout,
                                      sudo=sudo or self.target.sudo)
        except TimeoutError:
            raise ConnectorError(f"{self.name}: cannot write {target}: timed out") from None
        if code != 0:
            detail = err.decode(errors="replace").strip()[-TAIL:] or f"exit code {code}"
            raise ConnectorError(f"{self.name}: cannot write {target}: {detail}")
        return None

    def _put_names(self, host_path: str) -> tuple[str, str, str]:
        """(target, temporary name next to it, the target's directory)."""
        target = self.path(host_path)
        directory, sep, base = target.rpartition("/")
        return target, f"{directory}{sep}.{base}.pitstop-{os.urandom(4).hex()}", directory or sep or "."

    def _put_line(self, target: str, tmp: str, directory: str, mode: int, sudo: bool = False) -> str:
        """The exec-channel put as one line of a batch script: in a subshell with its arguments set,
        or (with sudo) as ``sudo -n -- sh -c PUT_SCRIPT``."""
        argv = self._put_argv(target, tmp, directory, mode)
        if sudo or self.target.sudo:
            return self.command_line(argv, sudo)
        return f"( set -- {shlex.join(argv[4:])}; {PUT_SCRIPT} )"

    @staticmethod
    def _put_argv(target: str, tmp: str, directory: str, mode: int) -> list[str]:
        """``sh -c PUT_SCRIPT pitstop-put TMP TARGET MODE DIR``: the exec-channel put as an argv."""
        return ["sh", "-c", PUT_SCRIPT, "pitstop-put", tmp, target, f"{mode:o}", directory]

    def _put_sftp(self, target: str, tmp: str, data: bytes, mode: int) -> None:
        directory = target.rpartition("/")[0]
        sftp = self._sftp_client()
        try:
            try:
                fh = sftp.open(tmp, "wb")
            except FileNotFoundError:
                self._mkdirs(sftp, directory)
                fh = sftp.open(tmp, "wb")
            with fh:
                fh.write(data)
                fh.chmod(mode)
            sftp.posix_rename(tmp, target)
        except OSError as exc:
            self._quiet_remove(sftp, tmp)
            raise ConnectorError(f"{self.name}: cannot write {target}: {exc}") from None

    @staticmethod
    def _mkdirs(sftp: paramiko.SFTPClient, directory: str) -> None:
        parts = [p for p in directory.split("/") if p]
        path = ""
        for p in parts:
            path += "/" + p
            try:
                sftp.stat(path)
            except FileNotFoundError:
                sftp.mkdir(path)

    @staticmethod
    def _quiet_remove(sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except OSError:
            pass

    def _sudo_run(self, argv: list[str]) -> CommandResult:
        """A file operation as a command under sudo; a refusal by sudo itself is an error, never a
        "no" (``sudo -n`` exits 1 with ``sudo: a password is required`` when it cannot run)."""
        res = self.run(argv, check=False, sudo=True)
        if res.exit_code == 1 and res.stderr.startswith("sudo:"):
            raise ConnectorError(f"{self.name}: sudo refused {shlex.join(argv)}: {res.stderr.strip()[-300:]}")
        return res

    def get(self, host_path: str, *, sudo: bool = False) -> bytes:
        target = self.path(host_path)
        if sudo or self.target.sudo:
            res = self._sudo_run(["cat", "--", target])
            if res.exit_code != 0:
                raise ConnectorError(f"{self.name}: cannot read {target}: {res.stderr.strip()[-300:]}")
            return res.stdout.encode()
        try:
            with self._sftp_client().open(target, "rb") as fh:
                return bytes(fh.read())
        except OSError as exc:
            raise ConnectorError(f"{self.name}: cannot read {target}: {exc}") from None

    def exists(self, host_path: str, *, sudo: bool = False) -> bool:
        target = self.path(host_path)
        if sudo or self.target.sudo:
            return self._sudo_run(["test", "-e", target]).exit_code == 0
        try:
            self._sftp_client().stat(target)
            return True
        except FileNotFoundError:
            return False

    def remove(self, host_path: str, *, sudo: bool = False) -> bool:
        target = self.path(host_path)
        if sudo or self.target.sudo:
            if not self.exists(host_path, sudo=True):
                return False
            self.run(["rm", "-f", "--", target], sudo=True)
            return True
        sftp = self._sftp_client()
        try:
            if stat.S_ISDIR(sftp.stat(target).st_mode or 0):
                raise ConnectorError(f"{self.name}: {target} is a directory")
            sftp.remove(target)
            return True
        except FileNotFoundError:
            return False
