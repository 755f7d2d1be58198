"""What watches a run without changing it: the k-NN monitor, the online linear probe and TensorBoard event files, as
the loop holds them (`run_monitors`)."""
