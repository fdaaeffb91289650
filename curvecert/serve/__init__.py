"""`serve-auth`: the daemon, the fail-closed forwarder, the gateway and their configuration."""
