"""Resumable, retried and checksummed HTTP(S) downloads with a progress bar.

The data goes to `<dest>.part`. When the connection breaks, the next attempt asks for the
rest with an HTTP Range request (and starts over if the server ignores it). Only once the
file's MD5 matches is it renamed to `<dest>`, so `<dest>` is either absent or verified.
"""

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import tqdm

from alexnet_tf.convert.errors import ChecksumError, DownloadError

PART_SUFFIX = '.part'
_READ_SIZE = 1 << 16

log = logging.getLogger(__name__)


class _BrokenTransfer(Exception):
  """The transfer stopped early or the server had a transient failure; worth retrying."""


# What a retry may cure. HTTPError (a URLError) is turned into one of ours before this.
_RETRYABLE = (_BrokenTransfer, urllib.error.URLError, http.client.HTTPException,
              ConnectionError, TimeoutError)


def file_md5(path: str) -> str:
  """The hex MD5 digest of a file."""
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def download(url: str, dest_path: str, md5: Optional[str] = None, *, retries: int = 5,
             timeout: float = 60.0, backoff: float = 1.0, progress: bool = True) -> str:
  """Downloads `url` to `dest_path`, verified against `md5`.

  An existing `dest_path` with the right checksum is kept as it is.

  Args:
    url: an http:// or https:// URL.
    dest_path: the final file; its directory is created if needed.
    md5: the expected hex MD5 digest, or None to skip the check.
    retries: further attempts after a broken or failed transfer; each resumes the last.
    timeout: seconds without data before an attempt counts as broken.
    backoff: seconds before the first retry, doubled for each further one.
    progress: show a progress bar (bytes).

  Returns:
    `dest_path`.

  Raises:
    DownloadError: the server refused the request, or every attempt failed.
    ChecksumError: the downloaded data has another MD5; `<dest>.part` is deleted too.
  """
  if retries < 0:
    raise ValueError(f'retries must be >= 0, got {retries}')
  if os.path.isfile(dest_path):
    if md5 is None or file_md5(dest_path) == md5.lower():
      log.info('%s is already downloaded', dest_path)
      return dest_path
    log.warning('%s does not have MD5 %s; downloading it again', dest_path, md5)
  os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
  part = dest_path + PART_SUFFIX
  for attempt in range(retries + 1):
    try:
      _fetch(url, part, timeout, progress)
      break
    except _RETRYABLE as error:
      if attempt == retries:
        raise DownloadError(f'{url}: the download failed {retries + 1} times, last: {error} '
                            f'(the partial data stays in {part} for the next try)') from error
      delay = backoff * 2 ** attempt
      log.warning('%s: %s; retry %d of %d in %.0f s', url, error, attempt + 1, retries, delay)
      time.sleep(delay)
  if md5 is not None:
    actual = file_md5(part)
    if actual != md5.lower():
      os.remove(part)  # resuming from wrong data could never succeed
      raise ChecksumError(f'{url}: the downloaded file has MD5 {actual}, expected {md5}; it '
                          f'was deleted (a corrupted transfer, or not the expected file)')
  os.replace(part, dest_path)
  log.info('downloaded %s to %s', url, dest_path)
  return dest_path


def _fetch(url: str, part: str, timeout: float, progress: bool) -> None:
  """One attempt: appends the rest of `url` to `part` (or rewrites it from the start)."""
  offset = os.path.getsize(part) if os.path.exists(part) else 0
  headers = {'Range': f'bytes={offset}-'} if offset else {}
  try:
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
  except urllib.error.HTTPError as error:
    if error.code == 416 and offset:
      return  # "range not satisfiable": the .part file is complete; the checksum will tell
    if error.code >= 500 or error.code == 429:
      raise _BrokenTransfer(f'HTTP {error.code} {error.reason}') from None
    raise DownloadError(f'{url}: HTTP {error.code} {error.reason}') from None
  with response:
    if offset and response.status == 206:
      start = _range_start(response.headers.get('Content-Range', ''))
      if start != offset:
        os.remove(part)
        raise _BrokenTransfer(f'asked for bytes from {offset}, got a range from {start}')
      mode = 'ab'
    else:
      if offset:
        log.info('%s: the server does not resume transfers; starting over', url)
      offset, mode = 0, 'wb'
    length = response.headers.get('Content-Length')
    total = offset + int(length) if length is not None else None
    received = offset
    name = os.path.basename(urllib.parse.urlparse(url).path) or url
    with open(part, mode) as f, tqdm.tqdm(total=total, initial=offset, unit='B',
                                          unit_scale=True, unit_divisor=1024, desc=name,
                                          disable=not progress) as bar:
      # http.client returns b'' (no exception) when the connection closes early.
      for chunk in iter(lambda: response.read(_READ_SIZE), b''):
        f.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))
  if total is not None and received < total:
    raise _BrokenTransfer(f'the connection closed after {received} of {total} bytes')


def _range_start(content_range: str) -> Optional[int]:
  match = re.match(r'bytes (\d+)-', content_range)
  return int(match.group(1)) if match else None
