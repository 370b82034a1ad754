"""Names from the source data as the output can hold them: class names and reported file names."""

from typing import Sequence

from alexnet_tf.convert.errors import ConversionError


def check_class_names(classes: Sequence[str], where: str) -> None:
  """ConversionError unless every name fits one line of labels.txt as valid UTF-8.

  A line break in a name would shift every later line of labels.txt off its label.
  """
  for name in classes:
    problem = None
    if not name.strip():
      problem = 'is empty'
    elif len(name.splitlines()) != 1 or name.splitlines()[0] != name:
      problem = 'contains a line break, which labels.txt (one name per line) cannot hold'
    else:
      try:
        name.encode('utf-8')
      except UnicodeEncodeError:
        problem = 'is not valid UTF-8'
    if problem:
      raise ConversionError(f'{where}: the class name "{printable(name)}" {problem}; '
                            f'rename it')


def printable(text: str) -> str:
  """`text` for a one-line report: control characters and bytes that are not UTF-8 escaped."""
  try:  # os.walk's stand-ins for undecodable bytes back to those bytes
    data = text.encode('utf-8', 'surrogateescape')
  except UnicodeEncodeError:
    data = text.encode('utf-8', 'backslashreplace')
  raw = data.decode('utf-8', 'backslashreplace')
  return ''.join(c if c.isprintable() else c.encode('unicode_escape').decode('ascii')
                 for c in raw)
