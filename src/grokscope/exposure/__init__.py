"""The ``exposure`` stage: search the token stream, in training order, for every critical phrase."""
