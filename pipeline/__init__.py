"""CNN image classification study: cats vs dogs and CIFAR-10, as a DVC pipeline tracked in MLflow."""
