"""What training, scoring and prediction share at run time: device and processes, threads, precision,
checkpoints."""
