"""A run, shared by every method: the loop (`loop`), its typed settings and their resolution on resume (`settings`),
checkpoints (`checkpoint`) and `metrics.jsonl` (`metrics`)."""
