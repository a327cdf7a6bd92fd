"""The streaming adapters: decide, join and learn. Thin loops around the pure core."""
