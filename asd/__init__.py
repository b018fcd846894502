"""asd: anomalous machine-sound detection with a contrastive encoder and covariance scoring."""

__version__ = "0.1.0"
