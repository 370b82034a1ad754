"""A TF_CONFIG cluster on this machine (127.0.0.1): one `python -m alexnet_tf.train`
process per task, for the tests, the benchmark and trying a strategy before renting machines.

    with loopback.LoopbackCluster({'chief': 1, 'worker': 1, 'ps': 1}, train_args,
                                  log_dir) as cluster:
      cluster.wait(['chief:0', 'worker:0'], timeout=600)

Ports are picked free at start (bound to 127.0.0.1:0, then released for the task). Every
process is killed when the block ends, however it ends: a ps task serves forever, and a
cluster whose chief died leaves workers waiting for it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence

TASK_ORDER = ('chief', 'worker', 'ps', 'evaluator')


def free_ports(count: int) -> List[int]:
  """`count` distinct ports free on 127.0.0.1 now (held together so none repeats)."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(('127.0.0.1', 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_configs(counts: Mapping[str, int]) -> Dict[str, str]:
  """{'chief:0': TF_CONFIG JSON, ...}: one per task of a loopback cluster of `counts`
  ({'chief': 1, 'worker': 2, 'ps': 1, 'evaluator': 1})."""
  jobs = [job for job in TASK_ORDER if counts.get(job)]
  ports = iter(free_ports(sum(counts[job] for job in jobs)))
  cluster = {job: [f'127.0.0.1:{next(ports)}' for _ in range(counts[job])] for job in jobs}
  return {f'{job}:{i}': json.dumps({'cluster': cluster, 'task': {'type': job, 'index': i}})
          for job in jobs for i in range(counts[job])}


class LoopbackCluster:
  """Starts every task of `counts` as `python -m alexnet_tf.train *train_args` with its
  TF_CONFIG; each task's output goes to log_dir/<job>-<i>.log."""

  def __init__(self, counts: Mapping[str, int], train_args: Sequence[str], log_dir: str,
               env: Optional[Mapping[str, str]] = None, deferred: Sequence[str] = ()):
    """`deferred` tasks are not started on entry: the caller starts them (`start`)."""
    self.configs = tf_configs(counts)
    self._deferred = set(deferred)
    self._args = list(train_args)
    self._log_dir = log_dir
    self._env = dict(os.environ if env is None else env)
    self.processes: Dict[str, subprocess.Popen] = {}

  def log_path(self, task: str) -> str:
    return os.path.join(self._log_dir, task.replace(':', '-') + '.log')

  def log(self, task: str) -> str:
    with open(self.log_path(task), encoding='utf-8', errors='replace') as f:
      return f.read()

  def start(self, task: str) -> subprocess.Popen:
    """Starts (or restarts) `task`; its log is appended to."""
    env = dict(self._env, TF_CONFIG=self.configs[task])
    with open(self.log_path(task), 'a', encoding='utf-8') as log:
      self.processes[task] = subprocess.Popen(
          [sys.executable, '-m', 'alexnet_tf.train', *self._args], env=env, stdout=log,
          stderr=subprocess.STDOUT, start_new_session=True)
    return self.processes[task]

  def __enter__(self) -> 'LoopbackCluster':
    os.makedirs(self._log_dir, exist_ok=True)
    try:
      for task in self.configs:
        if task not in self._deferred:
          self.start(task)
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def wait(self, tasks: Sequence[str], timeout: float) -> Dict[str, int]:
    """The exit codes of `tasks`; TimeoutError naming those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    codes = {}
    for task in tasks:
      try:
        codes[task] = self.processes[task].wait(max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        running = [t for t in tasks if self.processes[t].poll() is None]
        raise TimeoutError(f'tasks {running} still running after {timeout:.0f} s') from None
    return codes

  def wait_for_log(self, task: str, text: str, timeout: float) -> None:
    """Returns once `task`'s log holds `text`; RuntimeError if it exits first,
    TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while text not in self.log(task):
      if self.processes[task].poll() is not None:
        raise RuntimeError(f'{task} exited with {self.processes[task].returncode} before '
                           f'logging {text!r}')
      if time.monotonic() > deadline:
        raise TimeoutError(f'{task} did not log {text!r} within {timeout:.0f} s')
      time.sleep(0.2)

  def kill(self, task: str) -> None:
    """kill -9 of `task` (and anything it started), then reaps it."""
    process = self.processes[task]
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
    process.wait()

  def stop(self) -> None:
    """Kills every task still running (a ps task serves until this)."""
    for task in list(self.processes):
      self.kill(task)
