"""The learned encoder: network, contrastive and margin losses, views, training."""
