"""What the clinic keeps: the capture store, its exports, and per-frame result logs."""
