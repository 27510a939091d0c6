class StackError(RuntimeError):
    """A failure the user can act on; the message says what happened and what to do."""
