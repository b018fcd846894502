"""The detector: frames over time -> temporal pooling -> per-section scorer -> ensemble."""
