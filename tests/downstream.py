"""The company's mail server, run for real on loopback: Postfix, Dovecot LMTP, smtp-sink.

Owns the test doubles of Spoolgate's downstream, each a real daemon in its own folder on
its own port: :class:`PostfixDownstream` (SMTP into Maildir, optional STARTTLS, optional
SASL AUTH as a smarthost), :class:`DovecotLmtp` (LMTP/IMAP, optional over-quota users),
:class:`DovecotAuth` (only Dovecot's auth service, Postfix's SASL back end), :class:`Smarthost`
(the two together: a relay that wants AUTH), :class:`SmtpSink` (Postfix's
smtp-sink for misbehaving servers) and :class:`ConnectionCounter` (a server that is down,
counting the connection attempts). Every class is a context manager that starts on enter
and stops on exit; ``stop()`` is idempotent. Start-up waits for the port with a deadline.

Nothing here talks to the network: Postfix has DNS disabled, no peer-name look-ups and
every non-local transport set to ``error``. Failures raise ``RuntimeError`` with the
daemon's own log, or ``AssertionError`` when awaited mail does not arrive in time.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Self

MAIL_UID = 8  # Debian's "mail" user owns every Maildir, as in RECIPES.md
PASSWORD = "secret"
_POLL = 0.02
_QUEUE_ID = re.compile(r"\(Postfix\)[^;]*?\bid ([0-9A-Za-z]+)")
_MAILDIR_TIME = re.compile(r"^(\d+)\.(?:.*?M(\d+))?")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *predicate* until it is true; raise ``TimeoutError`` naming *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(_POLL)


def is_listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:*port*, read from /proc without connecting."""
    wanted = f"0100007F:{port:04X}"
    anywhere = f"00000000:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] in (wanted, anywhere) and fields[3] == "0A":
            return True
    return False


def greeting(port: int, timeout: float = 2.0) -> bytes:
    """The first line a server on 127.0.0.1:*port* sends, or b"" when none can be read."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.makefile("rb").readline()
    except OSError:
        return b""


def closed_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mkdir(path: Path, owner: int | str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    if isinstance(owner, int):
        os.chown(path, owner, owner)
    elif owner is not None:
        shutil.chown(path, owner)
    return path


def is_alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie has exited and only waits to be reaped: not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def process_tree(pid: int) -> list[int]:
    """*pid* and all its descendants (read from /proc), parents first."""
    tree, index = [pid], 0
    while index < len(tree):
        children = Path(f"/proc/{tree[index]}/task/{tree[index]}/children")
        try:
            tree += [int(child) for child in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass  # exited meanwhile
        index += 1
    return tree


def _wait_gone(pids: Sequence[int], timeout: float) -> None:
    """Wait until none of *pids* runs; SIGKILL the survivors (all ours) at the deadline."""
    try:
        wait_until(lambda: not any(map(is_alive, pids)), timeout, "processes gone")
    except TimeoutError:
        for pid in filter(is_alive, pids):
            os.kill(pid, signal.SIGKILL)


def _maildir_key(path: Path) -> tuple[int, int, str]:
    """Delivery time in a Maildir file name (``SECONDS.…M<microseconds>…``), then the name."""
    match = _MAILDIR_TIME.match(path.name)
    if match is None:
        return (0, 0, path.name)
    return (int(match.group(1)), int(match.group(2) or 0), path.name)


def maildir_files(maildirs: Sequence[Path]) -> list[Path]:
    """Message files in the new/ and cur/ folders of *maildirs*, by delivery time.

    A file an IMAP session moves from new/ to cur/ meanwhile is listed once (cur/ wins).
    """
    files: dict[str, Path] = {}
    for maildir in maildirs:
        for sub in ("new", "cur"):
            if (maildir / sub).is_dir():
                files.update((f"{maildir}/{entry.name.split(':')[0]}", entry)
                             for entry in (maildir / sub).iterdir())
    return sorted(files.values(), key=_maildir_key)


def parse_message(path: Path) -> EmailMessage:
    """A message file parsed with ``email.policy.default``."""
    with path.open("rb") as handle:
        return email.message_from_binary_file(handle, policy=email.policy.default)


def read_maildirs(list_files: Callable[[], list[Path]]) -> list[EmailMessage]:
    """Parse the files *list_files* names, listing again if one moved away meanwhile."""
    for _ in range(5):
        try:
            return [parse_message(path) for path in list_files()]
        except FileNotFoundError:
            continue  # moved from new/ to cur/ by an IMAP session: list again
    return [parse_message(path) for path in list_files()]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A test CA and a server certificate it signed (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(folder: Path, names: Sequence[str] = ("localhost", "127.0.0.1")) -> TlsFiles:
    """Write a CA and a server certificate for *names* (DNS names or IP addresses) in *folder*.

    Two certificates rather than one self-signed leaf so that strict verifiers
    (``VERIFY_X509_STRICT``) accept the chain as well.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Spoolgate test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0]).not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(pem))
    files.cert_file.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.key_file.write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files.key_file.chmod(0o600)
    return files


# Our own master.cf: no chroot (so nothing has to be copied into the queue folder), and only
# the services a virtual-mailbox server needs.
_MASTER_CF = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class PostfixDownstream:
    """A Postfix instance on 127.0.0.1:*port* delivering its virtual domains into Maildirs.

    Each domain has one Maildir (``mail/DOMAIN/``); every recipient gets its own file there,
    with a ``Delivered-To`` header. With *recipients*, only the listed local parts of that
    domain exist and others get ``550 5.1.1`` at RCPT. Loopback clients are in mynetworks,
    so other domains pass the relay check but hit the ``error`` transport: ``550 5.1.1``
    at RCPT, nothing leaves. Messages of any size (*size_limit* 0) and SMTPUTF8 are accepted;
    STARTTLS is offered only with *tls*, signed by the CA in :attr:`ca_file`.

    With *sasl_auth_port* it is a smarthost: AUTH is checked by the Dovecot auth service on
    that port (:class:`DovecotAuth`), offered only after STARTTLS when *tls* is on, and a
    client outside *mynetworks* that has not authenticated gets ``554 5.7.1`` at RCPT, even
    for this server's own domains. Give a *mynetworks* without loopback to require AUTH.
    """

    def __init__(self, folder: Path, port: int, domains: Sequence[str] = ("example.test",),
                 recipients: Mapping[str, Sequence[str]] | None = None, *, tls: bool = False,
                 size_limit: int = 0, hostname: str = "downstream.test",
                 sasl_auth_port: int | None = None, mynetworks: str = "127.0.0.0/8") -> None:
        self.folder = folder
        self.port = port
        self.domains = tuple(domains)
        self.recipients = {domain: tuple(parts) for domain, parts in (recipients or {}).items()}
        unknown = set(self.recipients) - set(self.domains)
        if unknown:
            raise ValueError(f"recipients for domains not served: {sorted(unknown)}")
        self.tls = tls
        self.size_limit = size_limit
        self.hostname = hostname
        self.sasl_auth_port = sasl_auth_port
        self.mynetworks = mynetworks
        self.conf_dir = folder / "conf"
        self.mail_dir = folder / "mail"
        self.log_path = folder / "postfix.log"
        self.ca_file: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._configured = False

    @property
    def route(self) -> str:
        """The gateway route to this server."""
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the master process started by :meth:`start` is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> Self:
        """Start Postfix and return once its smtpd answers ``220`` on the port."""
        if self.is_running:
            return self
        if not self._configured:
            self._configure()
        elif (self.folder / "queue" / "pid").is_dir():
            # Postfix's own switch to skip the integrity checks it already passed once.
            (self.folder / "queue" / "quick-start").touch()
        output = (self.folder / "postfix-start.out").open("ab")
        # start-fg keeps master a child of ours: we reap it, so no zombie waits for init.
        self._proc = subprocess.Popen(["postfix", "-c", str(self.conf_dir), "start-fg"],
                                      stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                      start_new_session=True)
        output.close()
        try:
            wait_until(self._answers, timeout, f"Postfix on port {self.port}")
        except (TimeoutError, RuntimeError) as error:
            self.stop()
            raise RuntimeError(f"{error}\n{self._diagnostics()}") from None
        return self

    def _answers(self) -> bool:
        if not self.is_running:
            raise RuntimeError("postfix start-fg exited")
        return is_listening(self.port) and greeting(self.port).startswith(b"220")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Postfix and wait until the port refuses connections.

        SIGTERM to the master, as ``postfix stop`` does; that command then polls the
        master's lock in one-second naps, while we simply wait for the master to exit.
        """
        if self._proc is None:
            return
        pids = process_tree(self._proc.pid)
        if self._proc.poll() is None:
            pid_file = self.folder / "queue" / "pid" / "master.pid"
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout)
        self._proc = None
        _wait_gone(pids, timeout)
        wait_until(lambda: not is_listening(self.port), timeout, f"port {self.port} released")

    def maildirs(self) -> list[Path]:
        """The Maildir of each domain."""
        return [self.mail_dir / domain for domain in self.domains]

    def maildir_messages(self) -> list[EmailMessage]:
        """Every delivered message file (one per recipient), in arrival order (see below)."""
        return read_maildirs(self._files_in_arrival_order)

    def message_ids(self) -> list[str]:
        """Message-ID of every delivered file, in the order Postfix received the messages.

        Sorted on the long queue ID in Postfix's own ``Received`` header, whose first ten
        characters encode when the queue file was created (microseconds), then on the
        delivery time in the Maildir file name (for several recipients of one message).
        Exact for messages sent one after another; for concurrent sessions it is the order
        in which their transactions began (first accepted RCPT), not the order of their dots.
        """
        return [str(message.get("Message-ID", "")).strip() for message in self.maildir_messages()]

    def count(self) -> int:
        """Number of delivered message files, without parsing them."""
        return len(maildir_files(self.maildirs()))

    def wait_for(self, count: int, timeout: float = 20.0) -> list[EmailMessage]:
        """Poll until at least *count* files arrived; return them all, in arrival order."""
        try:
            wait_until(lambda: self.count() >= count, timeout, f"{count} message(s) in Maildir")
        except TimeoutError:
            raise AssertionError(
                f"{self.count()} of {count} message(s) arrived within {timeout}s: "
                f"{self.message_ids()}\n--- postfix.log tail ---\n{self.log_text()[-3000:]}"
            ) from None
        return self.maildir_messages()

    def log_text(self) -> str:
        """Postfix's log of this instance."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _files_in_arrival_order(self) -> list[Path]:
        files = maildir_files(self.maildirs())
        keys = {}
        for path in files:
            with path.open("rb") as handle:
                head = handle.read(4096).decode("latin-1")
            match = _QUEUE_ID.search(head)
            keys[path] = match.group(1)[:10] if match else ""
        return sorted(files, key=lambda path: (keys[path], _maildir_key(path)))

    def _configure(self) -> None:
        for sub in ("conf", "queue"):
            _mkdir(self.folder / sub)
        _mkdir(self.folder / "data", "postfix")
        _mkdir(self.mail_dir, MAIL_UID)
        (self.conf_dir / "master.cf").write_text(_MASTER_CF.format(port=self.port))
        mailboxes = self.conf_dir / "vmailbox"
        lines = []
        for domain in self.domains:
            if domain in self.recipients:
                lines += [f"{part}@{domain} {domain}/" for part in self.recipients[domain]]
            else:
                lines.append(f"@{domain} {domain}/")
        mailboxes.write_text("\n".join(lines) + "\n")
        tls_lines = "smtpd_tls_security_level = none\n"
        if self.tls:
            files = make_tls_files(_mkdir(self.folder / "tls"))
            self.ca_file = files.ca_file
            tls_lines = (f"smtpd_tls_security_level = may\n"
                         f"smtpd_tls_chain_files = {files.key_file}, {files.cert_file}\n"
                         f"smtpd_tls_loglevel = 1\n")
        (self.conf_dir / "main.cf").write_text(self._main_cf(mailboxes) + tls_lines
                                               + self._sasl_lines())
        # Postfix waits (300 ms naps, about 2 s) while its config and map files look freshly
        # written, in case an editor is still at work; ours are complete, so date them back.
        past = time.time() - 60
        for name in ("main.cf", "master.cf", "vmailbox"):
            os.utime(self.conf_dir / name, (past, past))
        self._configured = True

    def _main_cf(self, mailboxes: Path) -> str:
        base = self.folder
        sasl = "" if self.sasl_auth_port is None else " permit_sasl_authenticated"
        return f"""\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
myhostname = {self.hostname}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
alias_maps =
alias_database =
virtual_mailbox_domains = {", ".join(self.domains)}
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = texthash:{mailboxes}
virtual_uid_maps = static:{MAIL_UID}
virtual_gid_maps = static:{MAIL_UID}
virtual_minimum_uid = 1
mynetworks = {self.mynetworks}
smtpd_relay_restrictions = permit_mynetworks{sasl} reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = error:outbound mail is disabled in tests
relay_transport = error:outbound mail is disabled in tests
message_size_limit = {self.size_limit}
virtual_mailbox_limit = 0
smtputf8_enable = yes
in_flow_delay = 0
enable_long_queue_ids = yes
maillog_file = {self.log_path}
maillog_file_prefixes = /var, /dev/stdout, {base}
"""

    def _sasl_lines(self) -> str:
        if self.sasl_auth_port is None:
            return ""
        return f"""\
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{self.sasl_auth_port}
smtpd_tls_auth_only = {"yes" if self.tls else "no"}
smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated reject
"""

    def _diagnostics(self) -> str:
        out = self.folder / "postfix-start.out"
        started = out.read_text(errors="replace")[-2000:] if out.exists() else ""
        return f"--- postfix start-fg ---\n{started}\n--- postfix.log ---\n{self.log_text()[-2000:]}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class DovecotLmtp:
    """Dovecot 2.3 with LMTP (and IMAP when *imap_port* is given) for *users*, on loopback.

    Users are full addresses with password :data:`PASSWORD` and a Maildir each. Dovecot
    refuses an unknown user at RCPT (``550 5.1.1 <addr> User doesn't exist``), not after
    DATA. Users in *over_quota* have a one-byte quota and ``lmtp_rcpt_check_quota = no``,
    so they are accepted at RCPT and get ``552 5.2.2 <addr> Quota exceeded`` in their own
    reply after the final dot while the other recipients get ``250 2.0.0``. With *tls*
    (see :func:`make_tls_files`), IMAP offers STARTTLS with that certificate. With
    *fast_storage*, Dovecot does not fsync (for tests that APPEND thousands of messages).
    """

    def __init__(self, folder: Path, port: int,
                 users: Sequence[str] = ("alice@example.test", "bob@example.test",
                                         "carol@example.test"),
                 imap_port: int | None = None, *, over_quota: Sequence[str] = (),
                 hostname: str = "mailstore.test", tls: TlsFiles | None = None,
                 fast_storage: bool = False) -> None:
        self.tls = tls
        self.fast_storage = fast_storage
        self.folder = folder
        self.port = port
        self.users = tuple(dict.fromkeys([*users, *over_quota]))
        self.imap_port = imap_port
        self.over_quota = tuple(over_quota)
        self.hostname = hostname
        self.config = folder / "dovecot.conf"
        self.log_path = folder / "dovecot.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def route(self) -> str:
        """The gateway route to this server."""
        return f"lmtp://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the Dovecot master started by :meth:`start` is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> Self:
        """Start Dovecot in the foreground as our child; return once every listener answers."""
        if self.is_running:
            return self
        self._configure()
        output = (self.folder / "dovecot.out").open("ab")
        self._proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)],
                                      stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                      start_new_session=True)
        output.close()
        ports = [self.port] + ([self.imap_port] if self.imap_port else [])
        try:
            wait_until(lambda: self._answers(ports), timeout, f"Dovecot on ports {ports}")
        except (TimeoutError, RuntimeError) as error:
            self.stop()
            out = (self.folder / "dovecot.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{error}\n{out}\n{self.log_text()[-2000:]}") from None
        return self

    def _answers(self, ports: list[int]) -> bool:
        if not self.is_running:
            raise RuntimeError("dovecot exited")
        return all(is_listening(port) for port in ports) and all(
            greeting(port).startswith((b"220", b"* OK")) for port in ports)

    def process_ids(self) -> list[int]:
        """The master's PID and its children's (log, config, auth, lmtp, …)."""
        return process_tree(self._proc.pid) if self._proc is not None and self.is_running else []

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Dovecot and wait until none of its processes is left.

        Sends SIGTERM to the master, which is what ``doveadm stop`` does; doveadm itself
        would then wait its full 3 s because the exited master stays a zombie until we,
        its parent, reap it. Children that outlive the master are killed by PID. Takes
        about 1.1 s: the master naps 1 s after telling its log process to quit.
        """
        if self._proc is None:
            return
        pids = self.process_ids()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        self._proc = None
        _wait_gone(pids, timeout)
        ports = [self.port] + ([self.imap_port] if self.imap_port else [])
        wait_until(lambda: not any(map(is_listening, ports)), timeout, "Dovecot ports released")

    def home(self, user: str) -> Path:
        """The home folder of *user* (its Maildir is ``home/Maildir``)."""
        return self.folder / "mail" / user

    def messages(self, user: str) -> list[EmailMessage]:
        """Messages in *user*'s Maildir (new/ and cur/), by delivery time."""
        return read_maildirs(lambda: maildir_files([self.home(user) / "Maildir"]))

    def wait_for(self, user: str, count: int, timeout: float = 20.0) -> list[EmailMessage]:
        """Poll until *user* has at least *count* messages; return them."""
        maildir = [self.home(user) / "Maildir"]
        try:
            wait_until(lambda: len(maildir_files(maildir)) >= count, timeout,
                       f"{count} message(s) for {user}")
        except TimeoutError:
            ids = [str(m.get("Message-ID")) for m in self.messages(user)]
            raise AssertionError(f"{user}: {len(ids)} of {count} message(s) within {timeout}s: "
                                 f"{ids}\n--- dovecot.log tail ---\n{self.log_text()[-3000:]}"
                                 ) from None
        return self.messages(user)

    def log_text(self) -> str:
        """Dovecot's log of this instance."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _configure(self) -> None:
        _mkdir(self.folder)
        _mkdir(self.folder / "mail", MAIL_UID)
        lines = []
        for user in self.users:
            _mkdir(self.home(user), MAIL_UID)
            extra = "userdb_quota_rule=*:bytes=1" if user in self.over_quota else ""
            lines.append(f"{user}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_UID}::"
                         f"{self.home(user)}::{extra}")
        users_file = self.folder / "users"
        users_file.write_text("\n".join(lines) + "\n")
        self.config.write_text(self._dovecot_conf(users_file))

    def _dovecot_conf(self, users_file: Path) -> str:
        imap = ""
        if self.imap_port:
            imap = ("service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
                    f"    port = {self.imap_port}\n  }}\n  inet_listener imaps {{\n"
                    "    port = 0\n  }\n}\n")
        return f"""\
base_dir = {self.folder}/run
state_dir = {self.folder}/state
log_path = {self.log_path}
hostname = {self.hostname}
protocols = lmtp{" imap" if self.imap_port else ""}
listen = 127.0.0.1
{self._ssl_settings()}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
{"mail_fsync = never" if self.fast_storage else ""}
first_valid_uid = 1
mail_plugins = quota
lmtp_rcpt_check_quota = no
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
{imap}"""

    def _ssl_settings(self) -> str:
        if self.tls is None:
            return "ssl = no"
        return f"ssl = yes\nssl_cert = <{self.tls.cert_file}\nssl_key = <{self.tls.key_file}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class DovecotAuth:
    """Only Dovecot's auth service, on 127.0.0.1:*port*: the SASL back end of a Postfix
    smarthost (``PostfixDownstream(..., sasl_auth_port=port)``).

    *users* maps user names to passwords (a passwd-file with ``{PLAIN}`` schemes); PLAIN and
    LOGIN are offered (Dovecot counts loopback as secured, so whether AUTH needs TLS is
    Postfix's choice), and a failed login is answered at once and logged (``auth_verbose``): no
    ``auth_failure_delay``, and no growing penalty for the client's IP (Dovecot's documented
    switch: the ``anvil-auth-penalty`` listener with mode 0), so retries are not slowed.
    Started and stopped like :class:`DovecotLmtp`.
    """

    def __init__(self, folder: Path, port: int,
                 users: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.port = port
        self.users = dict(users if users is not None else {"relayuser": PASSWORD})
        self.config = folder / "dovecot.conf"
        self.log_path = folder / "dovecot.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def is_running(self) -> bool:
        """Whether the Dovecot master started by :meth:`start` is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> Self:
        """Start Dovecot in the foreground as our child; return once the auth service
        sends its handshake (``VERSION``) on the port."""
        if self.is_running:
            return self
        self._configure()
        output = (self.folder / "dovecot.out").open("ab")
        self._proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)],
                                      stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                      start_new_session=True)
        output.close()
        try:
            wait_until(self._answers, timeout, f"Dovecot auth on port {self.port}")
        except (TimeoutError, RuntimeError) as error:
            self.stop()
            out = (self.folder / "dovecot.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{error}\n{out}\n{self.log_text()[-2000:]}") from None
        return self

    def _answers(self) -> bool:
        if not self.is_running:
            raise RuntimeError("dovecot exited")
        return is_listening(self.port) and greeting(self.port).startswith(b"VERSION\t")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Dovecot (SIGTERM to the master, reaped by us) and wait until none of its
        processes is left and the port is released.

        An auth process that still serves a client (a running Postfix keeps its SASL
        connection open) outlives the master; after a short grace it gets SIGTERM itself.
        """
        if self._proc is None:
            return
        pids = process_tree(self._proc.pid) if self.is_running else []
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        self._proc = None
        try:
            wait_until(lambda: not any(map(is_alive, pids)), 2.0, "Dovecot children gone")
        except TimeoutError:
            for pid in filter(is_alive, pids):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass  # exited meanwhile
        _wait_gone(pids, timeout)
        wait_until(lambda: not is_listening(self.port), timeout, "Dovecot auth port released")

    def log_text(self) -> str:
        """Dovecot's log of this instance."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _configure(self) -> None:
        _mkdir(self.folder)
        users_file = self.folder / "users"
        users_file.write_text("".join(f"{user}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_UID}::"
                                      f"{self.folder}::\n"
                                      for user, password in self.users.items()))
        users_file.chmod(0o644)
        self.config.write_text(f"""\
base_dir = {self.folder}/run
state_dir = {self.folder}/state
log_path = {self.log_path}
protocols = none
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
""")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Smarthost:
    """A relay that takes mail only after AUTH: :class:`PostfixDownstream` for *domains* on
    *port*, checking passwords with its own :class:`DovecotAuth` on *auth_port*.

    Its mynetworks is TEST-NET-1 (192.0.2.0/24), never loopback, so a client that has not
    authenticated gets ``554 5.7.1`` at RCPT even for *domains*; with *tls* AUTH is offered
    only after STARTTLS (CA in ``postfix.ca_file``), without it AUTH is offered in clear.
    Starts Dovecot first and stops Postfix first, so no smtpd holds a SASL connection then.
    """

    def __init__(self, folder: Path, port: int, auth_port: int,
                 domains: Sequence[str] = ("remote.test",), *, tls: bool = True,
                 users: Mapping[str, str] | None = None,
                 hostname: str = "smarthost.test") -> None:
        self.auth = DovecotAuth(folder / "auth", auth_port, users)
        self.postfix = PostfixDownstream(folder / "postfix", port, domains, tls=tls,
                                         hostname=hostname, sasl_auth_port=auth_port,
                                         mynetworks="192.0.2.0/24")

    @property
    def route(self) -> str:
        """The gateway route to this smarthost."""
        return self.postfix.route

    def start(self) -> Self:
        """Start Dovecot's auth service, then Postfix."""
        self.auth.start()
        try:
            self.postfix.start()
        except BaseException:
            self.auth.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Postfix, then Dovecot."""
        try:
            self.postfix.stop()
        finally:
            self.auth.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SmtpSink:
    """Postfix's ``smtp-sink`` on 127.0.0.1:*port*: accepts and discards, or misbehaves.

    The class constants are the *options* for each misbehaviour (see ``man smtp-sink``);
    combine them, e.g. ``SmtpSink(port, folder, SmtpSink.SOFT_REJECT_RCPT)``. smtp-sink never
    offers STARTTLS, SIZE or SMTPUTF8. Counts come from its ``-c`` counter line.
    """

    SOFT_REJECT_RCPT = ("-r", "RCPT")  # 450 4.3.0 Error: command failed (implies no PIPELINING)
    TEMPFAIL_AFTER_DATA = ("-r", ".")  # 450 4.3.0 Error: command failed, after the dot
    REJECT_AFTER_DATA = ("-f", ".")  # 500 5.3.0 Error: command failed; -B sets the text
    HANG_AFTER_DOT = ("-W", ".:3600")  # reads the dot, then no reply for an hour
    HANG_BEFORE_354 = ("-w", "3600")  # no reply to DATA for an hour
    CLOSE_MID_DATA = ("-A", "0")  # 354, then "550 This violates SMTP" and close, unread
    DISCONNECT_AFTER_DOT = ("-q", ".")  # reads the dot, closes without a reply
    SHUTDOWN_AFTER_DOT = ("-Q", ".")  # reads the dot, 421 4.0.0 and closes
    NO_ESMTP = ("-e",)  # 220 without "ESMTP", EHLO gets 500: the client must fall back to HELO
    NO_ENHANCED_CODES = ("-E",)  # ENHANCEDSTATUSCODES not announced (replies still carry codes)

    def __init__(self, port: int, folder: Path, options: Sequence[str] = ()) -> None:
        self.port = port
        self.folder = folder
        self.options = tuple(options)
        self.counter_path = folder / f"smtp-sink-{port}.out"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def route(self) -> str:
        """The gateway route to this server (LMTP when ``-L`` is among the options)."""
        return f"{'lmtp' if '-L' in self.options else 'smtp'}://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the smtp-sink process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start smtp-sink; return once it listens (checked without connecting to it)."""
        if self.is_running:
            return self
        _mkdir(self.folder)
        user = pwd.getpwuid(os.geteuid()).pw_name
        with self.counter_path.open("wb") as output:  # counts start at zero with each start
            self._proc = subprocess.Popen(
                ["smtp-sink", "-u", user, "-c", *self.options, f"127.0.0.1:{self.port}", "1000"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=self.folder)

        def listening() -> bool:
            if not self.is_running:
                raise RuntimeError(f"smtp-sink exited: {self.counter_path.read_text()[-500:]}")
            return is_listening(self.port)

        try:
            wait_until(listening, timeout, f"smtp-sink on port {self.port}")
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate smtp-sink (its open sessions are cut) and wait for it."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                self._proc.wait(10)
            self._proc = None

    def _counter(self, name: str) -> int:
        text = self.counter_path.read_text() if self.counter_path.exists() else ""
        found = re.findall(rf"\b{name}=(\d+)", text)
        return int(found[-1]) if found else 0

    def count(self) -> int:
        """Messages whose final dot smtp-sink read since it started, whatever it replied.

        Its ``mesg`` counter; a message cut off before the dot is not counted.
        """
        return self._counter("mesg")

    def connections(self) -> int:
        """Sessions that have *ended* (the ``sess`` counter); open sessions are not counted."""
        return self._counter("sess")

    def wait_for(self, count: int, timeout: float = 20.0) -> int:
        """Poll until at least *count* messages were received; return the count."""
        try:
            wait_until(lambda: self.count() >= count, timeout, f"{count} message(s) at smtp-sink")
        except TimeoutError:
            raise AssertionError(f"smtp-sink got {self.count()} of {count} message(s) "
                                 f"within {timeout}s") from None
        return self.count()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ConnectionCounter:
    """A company server that is down: accepts TCP connections on 127.0.0.1:*port*, counts them,
    answers *reply* (``421 4.3.2``; ``None`` for nothing) and closes each at once."""

    def __init__(self, port: int, reply: bytes | None = b"421 4.3.2 Service shutting down\r\n"
                 ) -> None:
        self.port = port
        self.reply = reply
        self._count = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def route(self) -> str:
        """The gateway route to this server."""
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._count

    def start(self) -> Self:
        """Listen (before returning) and accept in a background thread."""
        if self._sock is not None:
            return self
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,),
                                        name=f"connection-counter-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # stop() shut the listening socket down
                return
            with self._lock:
                self._count += 1
            with conn:
                if self.reply:
                    try:
                        conn.sendall(self.reply)
                    except OSError:
                        pass  # the client is gone already; it was counted

    def stop(self) -> None:
        """Stop listening; later connections are refused."""
        if self._sock is None:
            return
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass  # not connected / already shut: accept() fails on close() below anyway
        self._sock.close()
        if self._thread is not None:
            self._thread.join(10)
        self._sock = None
        self._thread = None

    def wait_for(self, count: int, timeout: float = 20.0) -> int:
        """Poll until at least *count* connections were made; return the count."""
        try:
            wait_until(lambda: self.count >= count, timeout, f"{count} connection(s)")
        except TimeoutError:
            raise AssertionError(f"{self.count} of {count} connection(s) within {timeout}s"
                                 ) from None
        return self.count

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
