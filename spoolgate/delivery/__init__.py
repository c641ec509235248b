"""Delivery: due recipients to the company's server, retries, route health and DSNs."""
