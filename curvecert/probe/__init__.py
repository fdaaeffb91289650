"""`probe`: connect to a ZeroMQ endpoint and say why a handshake succeeds or fails."""
