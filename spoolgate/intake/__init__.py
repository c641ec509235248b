"""Intake: turns one received message into a stored one (headers, checks, durable commit)."""
