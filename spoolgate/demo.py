"""The demo: a working configuration in a folder, with a self-signed certificate.

ClamAV is turned on in the demo's configuration when a clamd answers at one of
:data:`CLAMD_ADDRESSES` as the file is first written; otherwise the built-in scanner runs
alone (spam, and the EICAR test file, but no real virus) and :func:`scan_notices` says so
at every start, as it says when a configured clamd has stopped answering. Finding clamd
is one PING per address, with a short timeout, before the gateway starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from spoolgate.config import Settings
from spoolgate.ingress.tls import write_self_signed
from spoolgate.scan.clamav import ClamavScanner
from spoolgate.scan.engines import antivirus_warning

# Debian's clamav-daemon socket, then clamd's usual TCP port.
CLAMD_ADDRESSES = ("unix:/run/clamav/clamd.ctl", "tcp:127.0.0.1:3310")
PING_BUDGET = 2.0

DEMO_CONFIG = """\
# Spoolgate demo configuration: written by 'spoolgate demo'. Edit freely.
[node]
name = "demo"

[smtp]
listen = "127.0.0.1:2525"
hostname = "mx.example.test"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"

[store]
url = "sqlite:///spoolgate.db"

[web]
listen = "127.0.0.1:8025"

{scan}
[[domains]]
name = "example.test"
route = "smtp://127.0.0.1:2526"
"""

SCAN_WITH_CLAMAV = """\
[scan]
# clamd answered at {address} when this file was written: ClamAV finds viruses.
scanners = ["builtin", "clamav"]
clamav = "{address}"
"""

SCAN_WITHOUT_CLAMAV = """\
# No clamd answered when this file was written, so the built-in scanner runs alone: it
# finds spam and the EICAR test file, but no real virus. To turn ClamAV on, install
# clamav-daemon, run freshclam, start clamd and uncomment these lines (docs/installing.md):
# [scan]
# scanners = ["builtin", "clamav"]
# clamav = "{address}"
"""


def write_demo_config(folder: Path, clamd: str | None = None) -> Path:
    """Create *folder* with a demo config and TLS pair unless they exist; return the config
    path. A new config turns ClamAV on at *clamd* (an address that answered), if given."""
    folder.mkdir(parents=True, exist_ok=True)
    tls = folder / "tls"
    tls.mkdir(exist_ok=True)
    cert, key = tls / "cert.pem", tls / "key.pem"
    if not cert.exists() or not key.exists():
        write_self_signed(cert, key, "mx.example.test")
    config = folder / "spoolgate.toml"
    if not config.exists():
        scan = (SCAN_WITH_CLAMAV.format(address=clamd) if clamd
                else SCAN_WITHOUT_CLAMAV.format(address=CLAMD_ADDRESSES[0]))
        config.write_text(DEMO_CONFIG.format(scan=scan))
    return config


def find_clamd(addresses: Sequence[str] = CLAMD_ADDRESSES,
               budget: float = PING_BUDGET) -> str | None:
    """The first of *addresses* where clamd answers PING, or None (call it before the
    gateway's event loop runs: it runs one of its own)."""
    for address in addresses:
        if asyncio.run(ClamavScanner(address).ping(budget)):
            return address
    return None


def scan_notices(settings: Settings, clamd: str | None) -> list[str]:
    """What the demo prints about virus scanning: ClamAV on, down, or off (and where a
    clamd answers that the configuration does not use)."""
    path = settings.source
    if "clamav" in settings.scan.scanners:
        address = settings.scan.clamav
        if asyncio.run(ClamavScanner(address).ping(PING_BUDGET)):
            return [f"virus scanning: ClamAV (clamd at {address})"]
        return [f"warning: clamd does not answer at {address}: every message gets "
                "451 4.7.1 until it does; start clamd, or remove \"clamav\" from "
                f"[scan] scanners in {path}"]
    notices = [f"warning: {antivirus_warning(settings)}"]
    if clamd is not None:
        notices.append(f"clamd answers at {clamd}: add [scan] scanners = [\"builtin\", "
                       f"\"clamav\"] and clamav = \"{clamd}\" to {path} to use it")
    return notices
