#   ****  Generated on 2026-11-26 13:42:29 by CZMQ  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, in the .curve subdirectory.

metadata
    name = "Alice Example"
    email = "alice@example.org"
    organization = "ACME Widgets"
curve
    public-key = ")#bT{=8RHi)XQ[hG[*:ML*dRb3d5XTVO+7t481]f"
