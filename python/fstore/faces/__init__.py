"""What people use: the HTTP API (``http``), the ``fstore`` command (``client``),
``fstore-node`` (``cli``) and ``fstore demo`` (``demo``).

May import anything below it: ``fstore.node``, ``fstore.net``, ``fstore.storage``,
``fstore.formats``, ``fstore.errors``, ``fstore._native``.
"""
