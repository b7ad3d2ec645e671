"""Stage 1: hooks on the model and optimizer -> probes -> a device buffer -> one Batch per flush."""
