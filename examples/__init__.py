"""The design guide's examples, runnable offline (demo/test models `offline/*`, local sqlite MLflow)."""
