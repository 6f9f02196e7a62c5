"""Training: the datasets (`data`, `imagefolder`), one model's training loop (`train`), the Ray Tune trainable (`trainable`) and the sweep that runs the grid (`sweep`)."""
