"""Pure wire and text formats: Z85 (RFC 32), ZPL (RFC 4), ZMTP metadata, the ZAP codec (RFC 27).

Nothing here touches a socket, a thread or the disk; every module is tested without them.
"""
