"""The design guide's examples, runnable offline (demo/test models `offline/*`, local sqlite MLflow)."""

import os

# no network: MLflow telemetry off, litellm's bundled model-cost map instead of a download
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
