"""An exclusive, non-blocking lock on a directory: one writer at a time (free of TensorFlow).

The lock is an flock on a file inside the directory: the kernel drops it when its holder
exits however it exits, so the file a killed process leaves behind blocks nothing. The file
holds the holder's pid and command line, for the message a second process gets.
"""

import contextlib
import fcntl
import os
import sys
from typing import Iterator, Type

_HOLDER_BYTES = 512  # of the holder's line shown in the message


class DirectoryLockedError(RuntimeError):
  """Another process holds the directory's lock; the message names it and the directory."""


@contextlib.contextmanager
def hold(directory: str, lock_file: str, holder: str, hint: str,
         error: Type[DirectoryLockedError] = DirectoryLockedError) -> Iterator[None]:
  """Holds directory/lock_file exclusively for the block, or fails at once.

  Args:
    directory: an existing directory.
    lock_file: the lock's file name in it.
    holder: who else would hold it, for the message ('another training process').
    hint: what the user can do instead, for the message.
    error: the DirectoryLockedError subclass to raise.

  Raises:
    error: another process holds the lock (the message says which one).
    OSError: the lock file cannot be created (the directory is missing or unwritable).
  """
  path = os.path.join(directory, lock_file)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      line = os.read(fd, _HOLDER_BYTES).decode(errors='replace').strip()
      raise error(f'{directory} is in use: {holder}{f" (pid {line})" if line else ""} holds '
                  f'{path}; {hint}') from None
    os.ftruncate(fd, 0)
    command = ' '.join(os.path.basename(arg) if i == 0 else arg
                       for i, arg in enumerate(sys.argv))
    # For the message above; the flock is the lock.
    os.write(fd, f'{os.getpid()}: {command}\n'.encode(errors='replace'))
    yield
  finally:
    os.close(fd)  # releases the flock
