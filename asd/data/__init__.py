"""Data: the layouts users have, the clip index, fingerprints, and the synthetic generator."""
