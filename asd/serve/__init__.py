"""Serving a fitted detector: audio in (paths or wav bytes), scores out; MLflow's pyfunc.

``audio`` turns a table of (machine, section, audio) into scores with no MLflow involved (what
`asd score --model` runs); ``model`` is the MLflow pyfunc around it and the code that logs and
registers a detector version (what `mlflow models serve` loads).
"""
