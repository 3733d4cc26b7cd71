"""The ``train`` stage: pre-train a GPT on a token stream with log-spaced checkpoints."""
