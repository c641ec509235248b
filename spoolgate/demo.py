"""The demo: a working configuration in a folder, with a self-signed certificate."""

from __future__ import annotations

from pathlib import Path

from spoolgate.ingress.tls import write_self_signed

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

[[domains]]
name = "example.test"
route = "smtp://127.0.0.1:2526"
"""


def write_demo_config(folder: Path) -> Path:
    """Create *folder* with a demo config and TLS pair unless they exist; return the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    tls = folder / "tls"
    tls.mkdir(exist_ok=True)
    cert, key = tls / "cert.pem", tls / "key.pem"
    if not cert.exists() or not key.exists():
        write_self_signed(cert, key, "mx.example.test")
    config = folder / "spoolgate.toml"
    if not config.exists():
        config.write_text(DEMO_CONFIG)
    return config
