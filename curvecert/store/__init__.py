"""The trust store: immutable snapshots keyed by public key, scanning, add/remove, watchers."""
