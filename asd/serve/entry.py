"""The file MLflow runs to build a served detector (models from code: nothing is unpickled).

Logged with the model; it needs ``asd`` installed where the model is served.
"""

from mlflow.models import set_model

from asd.serve.model import DetectorModel

set_model(DetectorModel())
