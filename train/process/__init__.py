"""The process a run lives in, below every other part of `train`: which device and precision it uses (`devices`),
torchrun's process group (`distributed`), and how Ctrl-C or a scheduler's SIGTERM stops it cleanly (`interrupt`)."""
