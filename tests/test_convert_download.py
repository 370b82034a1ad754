"""The download code against a local HTTP server on 127.0.0.1: resume, retry, checksum."""

import hashlib
import http.server
import re
import threading

import pytest

from alexnet_tf import records
from alexnet_tf.convert import cifar10
from alexnet_tf.convert import download
from alexnet_tf.convert.errors import ChecksumError, DownloadError

ARCHIVE_PATH = '/cifar-10-python.tar.gz'


class _Server(http.server.ThreadingHTTPServer):
  """Serves `files`; the first `truncate` responses stop halfway through the body."""

  def __init__(self, files, truncate=0, ranges=True):
    super().__init__(('127.0.0.1', 0), _Handler)
    self.files = files
    self.truncate = truncate
    self.ranges = ranges
    self.requests = []  # (path, Range header or None)
    self.lock = threading.Lock()

  @property
  def url(self):
    return f'http://127.0.0.1:{self.server_address[1]}'


class _Handler(http.server.BaseHTTPRequestHandler):

  def do_GET(self):  # pylint: disable=invalid-name
    server = self.server
    with server.lock:
      server.requests.append((self.path, self.headers.get('Range')))
      truncate = server.truncate > 0
      server.truncate -= truncate
    body = server.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    start = 0
    match = re.match(r'bytes=(\d+)-$', self.headers.get('Range') or '')
    if match and server.ranges:
      start = int(match.group(1))
      self.send_response(206)
      self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
    else:
      self.send_response(200)
    self.send_header('Content-Length', str(len(body) - start))
    self.end_headers()
    rest = body[start:]
    # A broken connection: the announced length, then only half of it.
    self.wfile.write(rest[:len(rest) // 2] if truncate else rest)

  def log_message(self, *args):  # keep the test output quiet
    pass


def _received(data, truncated_attempts):
  """Bytes received after `truncated_attempts` transfers that each stop halfway."""
  size = 0
  for _ in range(truncated_attempts):
    size += (len(data) - size) // 2
  return size


@pytest.fixture
def serve():
  """serve(files, truncate=0, ranges=True) starts a server and returns it."""
  servers = []

  def start(files, truncate=0, ranges=True):
    server = _Server(files, truncate, ranges)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    servers.append(server)
    return server

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


@pytest.fixture(scope='module')
def archive(fake_cifar10_archive):
  """(bytes, md5) of the tiny official-format CIFAR-10 archive."""
  data = fake_cifar10_archive.read_bytes()
  return data, hashlib.md5(data).hexdigest()


def test_good_download(serve, archive, tmp_path):
  data, md5 = archive
  server = serve({ARCHIVE_PATH: data})
  dest = tmp_path / 'sub' / 'archive.tar.gz'
  assert download.download(server.url + ARCHIVE_PATH, str(dest), md5=md5,
                           progress=False) == str(dest)
  assert dest.read_bytes() == data
  assert not (tmp_path / 'sub' / ('archive.tar.gz' + download.PART_SUFFIX)).exists()
  assert server.requests == [(ARCHIVE_PATH, None)]
  # Already there with the right checksum: no second request.
  download.download(server.url + ARCHIVE_PATH, str(dest), md5=md5, progress=False)
  assert len(server.requests) == 1


def test_truncated_transfer_is_resumed_with_a_range_request(serve, archive, tmp_path):
  data, md5 = archive
  server = serve({ARCHIVE_PATH: data}, truncate=2)
  dest = tmp_path / 'archive.tar.gz'
  download.download(server.url + ARCHIVE_PATH, str(dest), md5=md5, backoff=0, progress=False)
  assert dest.read_bytes() == data
  assert server.requests == [(ARCHIVE_PATH, None),
                             (ARCHIVE_PATH, f'bytes={_received(data, 1)}-'),
                             (ARCHIVE_PATH, f'bytes={_received(data, 2)}-')]


def test_server_without_ranges_restarts_the_transfer(serve, archive, tmp_path):
  data, md5 = archive
  server = serve({ARCHIVE_PATH: data}, truncate=1, ranges=False)
  dest = tmp_path / 'archive.tar.gz'
  download.download(server.url + ARCHIVE_PATH, str(dest), md5=md5, backoff=0, progress=False)
  assert dest.read_bytes() == data
  assert len(server.requests) == 2


def test_wrong_checksum_raises_and_leaves_no_file(serve, archive, tmp_path):
  data, _ = archive
  server = serve({ARCHIVE_PATH: data})
  dest = tmp_path / 'archive.tar.gz'
  with pytest.raises(ChecksumError, match=r'expected 0{32}.*deleted') as error:
    download.download(server.url + ARCHIVE_PATH, str(dest), md5='0' * 32, progress=False)
  assert hashlib.md5(data).hexdigest() in str(error.value)
  assert list(tmp_path.iterdir()) == []


def test_gives_up_after_the_retries_and_keeps_the_partial_data(serve, archive, tmp_path):
  data, md5 = archive
  server = serve({ARCHIVE_PATH: data}, truncate=100)
  dest = tmp_path / 'archive.tar.gz'
  with pytest.raises(DownloadError, match='failed 3 times'):
    download.download(server.url + ARCHIVE_PATH, str(dest), md5=md5, retries=2, backoff=0,
                      progress=False)
  assert len(server.requests) == 3
  assert not dest.exists()
  part = tmp_path / ('archive.tar.gz' + download.PART_SUFFIX)
  assert data.startswith(part.read_bytes())
  # The next call resumes from the partial file and completes it.
  server.truncate = 0
  download.download(server.url + ARCHIVE_PATH, str(dest), md5=md5, progress=False)
  assert dest.read_bytes() == data
  assert server.requests[-1] == (ARCHIVE_PATH, f'bytes={_received(data, 3)}-')


def test_missing_file_is_not_retried(serve, tmp_path):
  server = serve({})
  with pytest.raises(DownloadError, match='HTTP 404'):
    download.download(server.url + '/missing.tar.gz', str(tmp_path / 'x'), backoff=0,
                      progress=False)
  assert len(server.requests) == 1


def test_cifar10_convert_downloads_a_url(serve, archive, tmp_path):
  """The whole path of `--dataset cifar10 --source URL`, through a broken connection."""
  data, md5 = archive
  server = serve({ARCHIVE_PATH: data}, truncate=1)
  metadata = cifar10.convert(server.url + ARCHIVE_PATH, str(tmp_path / 'out'), md5=md5,
                             workers=1, progress=False)
  assert (tmp_path / 'out' / 'cifar-10-python.tar.gz').read_bytes() == data
  assert metadata.counts == {records.TRAIN: 90, records.VALIDATION: 10, records.TEST: 20}
  assert metadata.source == server.url + ARCHIVE_PATH
