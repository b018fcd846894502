"""Hyperparameter sweeps on Ray Tune: search spaces, the trial function and the driver.

Ray, Optuna and MLflow are imported inside functions, so `import asd.sweep` stays cheap.
"""
