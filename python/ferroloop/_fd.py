"""Turning file objects into fds with the `selectors` module's errors, for the loop's mixins."""


def fileobj_to_fd(fileobj):
    """An fd from an int or an object with `fileno()`, with the `selectors` module's errors."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd

