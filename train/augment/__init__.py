"""The methods' augmentations, batched on the device: single views (crops, flips, rotations, Sobel; `views`) and the
modern methods' multi-view recipes (`multiview`). The patches themselves are rendered by `pipeline.augment`."""
