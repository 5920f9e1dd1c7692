"""Links between nodes and who the members are.

``wire`` is the sans-IO frame codec; ``link`` its asyncio adapter (PeerLink,
Listener, dial and accept); ``trust`` the network key, certificates and HELLO
proofs; ``identity`` the key files; ``membership`` the member list and links;
``placement`` where an address belongs.
May import: ``fstore.formats``, ``fstore.errors``, ``fstore._native``.
"""
