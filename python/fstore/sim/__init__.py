"""A simulator of membership gossip: thousands of ``fstore.net.gossip`` cores on one clock.

``network`` is the discrete-event loop (latency, loss, partitions), ``cluster``
the members and what happens to them, ``observe`` what is measured,
``scenarios`` the experiments of docs/SCALE.md, ``report`` their table,
``plots`` the figures (matplotlib, optional) and ``__main__`` the command
``python -m fstore.sim``. May import: ``fstore.net``, ``fstore.errors``.
"""
