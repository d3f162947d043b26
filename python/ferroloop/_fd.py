"""Small helpers shared by the loop's mixins: turning file objects into fds with the `selectors`
module's errors, and the stand-in for methods not written yet."""


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


def not_implemented(name, area):
    """A method that raises NotImplementedError naming itself and the missing area."""

    def method(self, *args, **kwargs):
        raise NotImplementedError(f"ferroloop does not implement {name}() yet ({area})")

    method.__name__ = name
    method.__qualname__ = f"Loop.{name}"
    return method
