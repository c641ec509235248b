"""Scanning: scanners report findings about a message; the policy decides what to do."""
