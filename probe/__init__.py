"""Evaluation of trained encoders, as in the paper's section 4.1: linear probes on every conv layer,
fine-tuning with frozen early layers, first-layer filter pictures, and tables against the paper's numbers.

Entry points: `probe linear`, `probe finetune`, `probe filters`, `probe report` (see `probe --help`).
"""
