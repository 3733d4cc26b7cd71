"""The token stream: ``prepare`` (tokenize + pack in training order) and the readers of every stream format."""
