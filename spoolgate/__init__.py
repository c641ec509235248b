"""Spoolgate: an email continuity gateway.

The flow, one package per stage: ``ingress`` (SMTP) -> ``intake`` (headers,
checks) -> ``store`` (durable queue) -> delivery; ``mail`` holds the value
types every stage shares.
"""

__version__ = "0.1.0"
