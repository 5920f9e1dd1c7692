"""A node's data directory: blob files (``blobs``) and the SQLite catalog (``catalog``).

Knows nothing of the network.
May import: ``fstore.formats``, ``fstore.errors``, ``fstore._native``.
"""
