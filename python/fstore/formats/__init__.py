"""The byte formats of docs/FORMAT.md: capabilities, manifests, name records, the text code.

Pure functions and small value types over bytes; nothing here does I/O.
May import: ``fstore.errors``, ``fstore._native``.
"""
