"""Certificates: key values, the immutable `Certificate`, the CZMQ file pair, `verify` findings."""
