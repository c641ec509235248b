"""The admin side: the web console (queue, quarantine, tracking, dashboard, audit log)
and the monitoring endpoints (/metrics, /healthz, /readyz)."""
