"""Links between nodes and who the members are.

``wire`` is the sans-IO frame codec; ``link`` its asyncio adapter (PeerLink,
Listener, dial and accept); ``trust`` the network key, certificates and HELLO
proofs; ``identity`` the key files; ``membership`` the links (bootstrap, on
demand, at most ``max_links``); ``placement`` where an address belongs;
``gossip`` (with ``gossip_messages`` and ``gossip_table``) the sans-IO membership
core, and ``gossip_driver`` that core in asyncio over the links (docs/SCALE.md).
May import: ``fstore.formats``, ``fstore.errors``, ``fstore._native``.
"""
