"""Shared set-up for the benchmarks: free ports, a Postfix relay instance, smtp-sink, Spoolgate.

Everything runs on loopback in a temporary folder and is stopped at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.recv(100)
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (run scripts/setup-test-env.sh first)")


@contextmanager
def workdir(prefix: str):
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def smtp_sink(port: int, folder: Path):
    """Postfix's smtp-sink, accepting and discarding; yields a function reading its count
    (messages whose final dot it read, from its ``-c`` counter line)."""
    out = folder / f"smtp-sink-{port}.out"
    with out.open("ab") as output:
        proc = subprocess.Popen(["smtp-sink", "-u", "root", "-c", f"127.0.0.1:{port}", "1000"],
                                stdout=output, stderr=subprocess.DEVNULL, cwd=folder)

    def count() -> int:
        found = re.findall(rb"mesg=(\d+)", out.read_bytes()[-4096:])
        return int(found[-1]) if found else 0

    try:
        _wait_listening(port)
        yield count
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_listening(port: int, timeout: float = 30.0) -> None:
    """Wait until *port* accepts, without opening a session (smtp-sink counts sessions)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = Path("/proc/net/tcp").read_text()
        if f":{port:04X} 00000000:0000 0A" in listening:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wait_count(count, target: int, timeout: float = 300.0, poll: float = 0.02) -> float:
    """Wait until ``count()`` reaches *target*; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count() >= target:
            return time.perf_counter()
        time.sleep(poll)
    raise RuntimeError(f"only {count()} of {target} messages arrived in {timeout:.0f}s")


@contextmanager
def postfix_relay(port: int, relay_to: int, folder: Path):
    """A Postfix instance on *port* relaying everything to 127.0.0.1:*relay_to*."""
    base = folder / "postfix"
    for sub in ("conf", "queue", "data"):
        (base / sub).mkdir(parents=True)
    master = Path("/etc/postfix/master.cf").read_text()
    master = master.replace("\nsmtp      inet", f"\n{port}      inet", 1)
    (base / "conf/master.cf").write_text(master)
    (base / "conf/main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
myhostname = reference.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains = example.test
relayhost = [127.0.0.1]:{relay_to}
smtp_dns_support_level = disabled
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {base}
default_process_limit = 100
""")
    shutil.chown(base / "data", "postfix")
    subprocess.run(["postconf", "-e", _alternate_dirs(base / "conf")], check=True)
    subprocess.run(["postfix", "-c", str(base / "conf"), "start"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield base
    finally:
        subprocess.run(["postfix", "-c", str(base / "conf"), "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _alternate_dirs(conf: Path) -> str:
    current = subprocess.run(["postconf", "-h", "alternate_config_directories"],
                             capture_output=True, text=True).stdout.strip()
    dirs = [d for d in current.replace(",", " ").split() if Path(d).exists()]
    return "alternate_config_directories = " + " ".join(dirs + [str(conf)])


def write_spoolgate_config(folder: Path, port: int, route_port: int, workers: int,
                           store_url: str | None = None, delivery: bool = False,
                           name: str = "spoolgate.toml", scan: bool = True) -> Path:
    """Spoolgate's config for a benchmark: the built-in scanner on (unless not *scan*),
    but not SPF, DKIM and DMARC. Those cost what the site's resolver costs, and a benchmark, like the tests,
    sends nothing off this machine (the system resolver here is not on it)."""
    config = folder / name
    config.write_text(f"""\
[node]
name = "bench"
[delivery]
enabled = {'true' if delivery else 'false'}
[smtp]
listen = "127.0.0.1:{port}"
hostname = "mx.bench.test"
workers = {workers}
[store]
url = "{store_url or 'sqlite:///' + str(folder / 'spoolgate.db')}"
[log]
file = "{folder / 'spoolgate.log'}"
[web]
enabled = false
[metrics]
enabled = false
[scan]
authentication = false
{'' if scan else 'scanners = []'}
[[domains]]
name = "example.test"
route = "smtp://127.0.0.1:{route_port}"
""")
    return config


@contextmanager
def spoolgate(config: Path, port: int):
    proc = subprocess.Popen([sys.executable, "-m", "spoolgate", "serve", "--config", str(config)],
                            cwd=ROOT, start_new_session=True)
    try:
        wait_port(port)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def process_tree_rss_peak(pid: int) -> dict[int, int]:
    """VmHWM (peak resident set, KiB) of *pid* and its children."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    peaks = {}
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[p] = int(line.split()[1])
        except FileNotFoundError:
            pass
    return peaks


def process_tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of *pid* and its children."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        cpu[p] = (int(fields[11]) + int(fields[12])) / ticks
    return cpu


def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    """Run smtp-source; return the wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "sender@source.test", "-t", "user@example.test", f"127.0.0.1:{port}"],
                   check=True)
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]
