"""The synthetic DCASE generator: machine recipes, signal building blocks, anomalies."""
