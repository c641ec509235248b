"""spoolgate/demo.py: the demo turns ClamAV on only where a clamd answers, and says so.

The case where clamd answers runs against a real clamd in
tests/integration/scan/test_clamav.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

from spoolgate.config import load_settings
from spoolgate.demo import find_clamd, scan_notices, write_demo_config
from spoolgate.scan.engines import antivirus_warning


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_clamd_the_demo_runs_the_builtin_alone_and_warns(tmp_path: Path) -> None:
    silent = (f"unix:{tmp_path / 'no-clamd.ctl'}", f"tcp:127.0.0.1:{_closed_port()}")
    assert find_clamd(silent, budget=1.0) is None
    config = write_demo_config(tmp_path / "demo", None)
    settings = load_settings(config)  # a valid file, ready to serve
    assert settings.scan.scanners == ("builtin",)
    assert '# scanners = ["builtin", "clamav"]' in config.read_text()
    (notice,) = scan_notices(settings, None)
    assert notice == f"warning: {antivirus_warning(settings)}"
    assert "[scan].scanners" in notice and str(config) in notice


def test_a_demo_config_that_names_a_silent_clamd_says_mail_will_wait(tmp_path: Path) -> None:
    address = f"tcp:127.0.0.1:{_closed_port()}"
    settings = load_settings(write_demo_config(tmp_path, address))
    assert settings.scan.scanners == ("builtin", "clamav") and settings.scan.clamav == address
    (notice,) = scan_notices(settings, None)
    assert notice.startswith(f"warning: clamd does not answer at {address}: every message "
                             "gets 451 4.7.1")


def test_an_existing_demo_config_is_kept_as_edited(tmp_path: Path) -> None:
    config = write_demo_config(tmp_path, None)
    config.write_text(config.read_text().replace('name = "demo"', 'name = "mine"'))
    assert write_demo_config(tmp_path, "tcp:127.0.0.1:3310") == config
    assert 'name = "mine"' in config.read_text() and "\nscanners" not in config.read_text()
