"""The store: every byte of message data and all queue state, on SQLite or PostgreSQL.

Only this package writes message data, recipients' queue rows and events.
Open it with :func:`spoolgate.store.store.open_store`.
"""
