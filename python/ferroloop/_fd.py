"""Turning file objects into fds with the `selectors` module's errors, and checking that an
object still holds the fd it was registered with, for the loop's mixins."""


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


# The largest number epoll takes: the stock selector's `epoll.register` converts to a C int.
C_INT_MAX = 2**31 - 1


def registrable_fd(fileobj):
    """`fileobj_to_fd` for a registration: a number beyond a C int fails as the stock selector's
    `register` does."""
    fd = fileobj_to_fd(fileobj)
    if fd > C_INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return fd



def live_fd(owner, fd):
    """`fd` while `owner` (the file object or socket it came from) still holds it, else -1, on
    which `os.read`/`os.write` fail with EBADF as they would on the closed object: no I/O ever
    goes through a number its object gave up, which the kernel may have handed to another file
    (see `src/owner`)."""
    try:
        held = owner.fileno()
    except Exception:
        return -1
    return fd if held == fd else -1
