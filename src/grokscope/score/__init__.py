"""The ``score`` stage: score every checkpoint on every pair, with hidden states and attention."""
