"""SMTP ingress: the conversation with sending MTAs (aiosmtpd), its limits and its policy."""
