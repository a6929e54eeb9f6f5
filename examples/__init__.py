"""The design guide's examples, runnable offline (demo/test models `offline/*`, local sqlite MLflow)."""

from schemas.third_parties import quiet_third_parties

quiet_third_parties()
