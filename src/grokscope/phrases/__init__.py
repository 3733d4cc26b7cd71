"""The ``phrases`` stage: the critical phrase of every minimal pair (rules, selectors, word alignment)."""
