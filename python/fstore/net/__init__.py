"""Links between nodes and who the members are.

``wire`` is the sans-IO frame codec; ``link`` its asyncio adapter (PeerLink,
Listener, dial and accept); ``trust`` the network key, certificates and HELLO
proofs; ``identity`` the key files; ``membership`` the member list and links;
``placement`` where an address belongs; ``gossip`` (with ``gossip_messages`` and
``gossip_table``) the sans-IO membership core that is to replace ``membership``'s
full mesh (docs/SCALE.md).
May import: ``fstore.formats``, ``fstore.errors``, ``fstore._native``.
"""
