"""One module per target of `python -m experiments`, each registering its presets, stages and report
(experiments.registry.register); the registry imports every module here."""
