"""`spoolgate scan FILE...`: one JSON line per message, from the configured scanners."""

from __future__ import annotations

import json

import pytest

from spoolgate.scan.builtin import GTUBE
from tests.clamd import EICAR

pytestmark = pytest.mark.integration


def test_scan_prints_the_verdict_of_each_file_with_builtin_and_clamav(
        gateway_factory, start_clamd, folder) -> None:
    daemon = start_clamd()
    gateway = gateway_factory(start=False, extra={"scan": {
        "scanners": ["builtin", "clamav"], "clamav": f"tcp:127.0.0.1:{daemon.port}"}})
    spam = folder / "spam.eml"
    spam.write_bytes(b"Subject: offer\r\n\r\n" + GTUBE + b"\r\n")
    virus = folder / "virus.eml"
    virus.write_bytes(b"Subject: invoice\r\n\r\n" + EICAR + b"\r\n")
    ham = folder / "ham.eml"
    ham.write_bytes(b"Subject: lunch?\r\n\r\nAt noon.\r\n")

    result = gateway.cli("scan", str(spam), str(virus), str(ham), str(folder / "missing.eml"))

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["file"], r["verdict"]) for r in lines] == [
        (str(spam), "reject"), (str(virus), "reject"), (str(ham), "pass")]
    assert lines[0]["symbols"] == {"GTUBE": 1000.0} and lines[0]["viruses"] == []
    assert lines[1]["viruses"] and "EICAR" in lines[1]["viruses"][0]
    assert lines[2]["score"] == 0 and lines[2]["errors"] == {}
    assert result.returncode == 1 and "missing.eml: No such file" in result.stderr
