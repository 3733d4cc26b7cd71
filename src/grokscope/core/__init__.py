"""What every stage shares: settings, the study directory, errors, tokenizers, checkpoints, devices."""
