"""ZAP decisions (RFC 27): the pure policy, password files, providers, and the live handlers."""
