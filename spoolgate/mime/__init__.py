"""One MIME parse of a message, shared by scanning, indexing, relaying and webmail."""
