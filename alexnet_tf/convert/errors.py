"""Exceptions for problems the user can fix: a missing directory, a bad archive, a checksum."""


class ConversionError(ValueError):
  """The source data or an argument is unusable; the message names the path and the problem."""


class DownloadError(ConversionError):
  """A download failed: the server refused it, or every retry broke off."""


class ChecksumError(DownloadError):
  """A downloaded file's MD5 differs from the expected one; no file was left behind."""
