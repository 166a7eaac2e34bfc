"""sweeper: regularization sweeps with Hydra, Optuna, Lightning and MLflow."""
