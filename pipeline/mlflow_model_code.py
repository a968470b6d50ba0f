"""The code MLflow keeps with the photo classifier and runs to rebuild it (models from code:
nothing is unpickled when the model loads)."""
import mlflow

from pipeline.serving import PhotoClassifier

mlflow.models.set_model(PhotoClassifier())
