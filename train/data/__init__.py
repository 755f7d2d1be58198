"""Where training data comes from: rendered shards and real image sets, read as batches (`sources`), the `KIND:PATH`
specification shared with `probe` (`specs`), and the readers of each on-disk layout (CIFAR pickles, ImageFolder
trees, tarballs, labelled sets packed as shards)."""
