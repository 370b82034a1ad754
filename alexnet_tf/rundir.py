"""The run directory (`--model-dir`): what a training run keeps besides its checkpoints.

  run.json               the config and dataset of the run (resume, export, evaluate)
  train_mean.npy         the mean the training input subtracted ([H, W, 3] or [3]; absent
                         for subtract_mean='none'), for evaluating and exporting on any data
  schedule_state.json    the plateau schedule's state after the newest evaluation
  history.jsonl          one JSON line per evaluation
  best/                  a copy of the best checkpoint so far, with its metrics.json
  cycles/epoch-N/        the `restarts` schedule: a copy of each cycle's last checkpoint
  .lock                  held (flock) by the one training process writing the directory
                         (in a cluster: the chief)
  .joined/               a parameter_server cluster's start marks (hooks.JoinBarrierHook)
  model.ckpt-*, events.* the Estimator's own

Files are replaced by writing a temporary name and renaming it (best/ too, as a directory), so
a run killed at any point leaves each of them old or new, never half written.
"""

import dataclasses
import glob
import json
import logging
import os
import shutil
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from alexnet_tf import config as config_lib
from alexnet_tf import dirlock
from alexnet_tf import input_pipeline, records, schedule
from alexnet_tf.config import Config

tf1 = tf.compat.v1
log = logging.getLogger(__name__)

RUN_FILE = 'run.json'
MEAN_FILE = 'train_mean.npy'
STATE_FILE = 'schedule_state.json'
HISTORY_FILE = 'history.jsonl'
BEST_DIR = 'best'
BEST_METRICS_FILE = 'metrics.json'  # in best/ and each cycles/epoch-N/
CYCLES_DIR = 'cycles'
LOCK_FILE = '.lock'


class RunDirLockedError(dirlock.DirectoryLockedError):
  """Another process is training into the model directory."""


def lock(model_dir: str):
  """Holds model_dir/.lock exclusively for the block (`with rundir.lock(d):`), or fails at once.

  Two training processes writing one directory would interleave checkpoints, history and
  schedule state. A lock left by a killed run blocks nothing (`dirlock`).

  Raises:
    RunDirLockedError: another process holds it (the message names the directory).
  """
  return dirlock.hold(model_dir, LOCK_FILE, 'another training process',
                      'wait for it to finish or use another --model-dir', RunDirLockedError)


@dataclasses.dataclass(frozen=True)
class Run:
  """What a model directory was trained with."""
  config: Config
  data_dir: str
  metadata: records.DatasetMetadata


def save_run(model_dir: str, config: Config, source: input_pipeline.Source) -> None:
  """Records the run's config, its dataset (`input_pipeline.open_dataset`) and the mean its
  training input subtracts; refuses to resume a model directory with another network."""
  path = os.path.join(model_dir, RUN_FILE)
  if os.path.isfile(path):
    previous = load_run(model_dir, source.data_dir).config
    # Devices, the LRN implementation and the compute precision may change between sessions
    # (the variables are float32 in every precision); the variables may not.
    comparable = dict(tower_devices=config.model.tower_devices, lrn_impl=config.model.lrn_impl,
                      precision=config.model.precision)
    if dataclasses.replace(previous.model, **comparable) != config.model:
      raise ValueError(f'{model_dir} holds a run of another network ({path}); use a new '
                       f'--model-dir or the same settings')
  raw = {'config': config_lib.to_dict(config), 'data_dir': os.path.abspath(source.data_dir)}
  records.write_atomically(path, lambda f: json.dump(raw, f, indent=2))
  _save_training_mean(model_dir, source.mean)


def load_run(model_dir: str, data_dir: Optional[str] = None) -> Run:
  """The run recorded in `model_dir`; `data_dir` overrides the dataset it trained on."""
  raw = _read_run_file(model_dir)
  data_dir = data_dir or raw['data_dir']
  return Run(config_lib.from_dict(raw['config']), data_dir, records.read_metadata(data_dir))


def load_config(model_dir: str) -> Config:
  """The config recorded in `model_dir`, without opening its dataset (which a run of
  imported weights, or one whose data moved, does not have)."""
  return config_lib.from_dict(_read_run_file(model_dir)['config'])


def _read_run_file(model_dir: str) -> dict:
  path = os.path.join(model_dir, RUN_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: {model_dir} is not a training run of '
                            f'alexnet_tf (python -m alexnet_tf.train writes it)')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def check_classes(checkpoint_path: str, config: Config, run: 'Run') -> None:
  """ValueError unless `run`'s dataset has as many classes as the checkpoint's classifier.

  A dataset given in place of the training one (`--data-dir`) must label the same classes:
  with another count every prediction (or the restore itself) would fail later, far from
  the cause.
  """
  suffix = f'{config.model.logits_name}/biases'
  shapes = [shape for name, shape in tf.train.list_variables(checkpoint_path)
            if name.endswith(suffix)]
  if shapes and shapes[0] != [run.metadata.num_classes]:
    raise ValueError(f'{run.data_dir} has {run.metadata.num_classes} classes, but '
                     f'{checkpoint_path} was trained for {shapes[0][0]}: use a dataset with '
                     f'the classes the run trained on')


def _save_training_mean(model_dir: str, mean: Optional[np.ndarray]) -> None:
  path = os.path.join(model_dir, MEAN_FILE)
  if mean is None:  # subtract_mean='none'; a file of an earlier session would contradict it
    if os.path.isfile(path):
      os.remove(path)
    return
  records.write_atomically(path, lambda f: np.save(f, np.asarray(mean, np.float32)), mode='wb')


def training_mean(model_dir: str) -> Optional[np.ndarray]:
  """The mean the run's training input subtracted: float32 [H, W, 3] ('pixel'), [3] ('rgb')
  or None ('none'). Evaluating or exporting on any data must subtract this one.

  Run directories from before train_mean.npy was saved get the mean of the dataset their
  run.json names, which is what they trained with unless that directory changed since.
  """
  path = os.path.join(model_dir, MEAN_FILE)
  if os.path.isfile(path):
    return np.load(path)
  run = load_run(model_dir)
  if run.config.data.subtract_mean == 'none':
    return None
  log.info('%s has no %s (an older run directory): using the mean of the dataset the run '
           'trained on, %s', model_dir, MEAN_FILE, run.data_dir)
  return input_pipeline.dataset_mean(run.data_dir, run.config.data, run.metadata)


def latest_step(model_dir: str) -> int:
  """The global step of the newest checkpoint in `model_dir`, 0 without one."""
  path = tf1.train.latest_checkpoint(model_dir)
  return int(path.rsplit('-', 1)[1]) if path else 0


def resolve_checkpoint(model_dir: str, which: str = 'best') -> str:
  """'best' (model_dir/best), 'latest' (the newest), the checkpoint of a directory (a path,
  or one inside model_dir such as cycles/epoch-37), or a checkpoint path as given."""
  named = {'best': os.path.join(model_dir, BEST_DIR), 'latest': model_dir}
  directory = named.get(which) or next(
      (d for d in (which, os.path.join(model_dir, which)) if os.path.isdir(d)), None)
  if directory is not None:
    path = tf1.train.latest_checkpoint(directory)
    if path is None:
      raise FileNotFoundError(f'{directory}: no checkpoint' +
                              (f' ({which})' if which in named else ''))
    return path
  if not os.path.isfile(which + '.index'):
    raise FileNotFoundError(f'{which}: no such checkpoint')
  return which


def load_schedule_state(model_dir: str,
                        train_config: config_lib.TrainConfig) -> schedule.PlateauState:
  """The saved plateau state, or a fresh one at `train_config.learning_rate`."""
  path = os.path.join(model_dir, STATE_FILE)
  if not os.path.isfile(path):
    return schedule.PlateauState(learning_rate=train_config.learning_rate)
  with open(path, encoding='utf-8') as f:
    try:
      return schedule.PlateauState(**json.load(f))
    except (ValueError, TypeError) as e:
      raise ValueError(f'{path}: unreadable schedule state ({e}); delete it to restart the '
                       f'schedule at the initial learning rate') from None


def save_schedule_state(model_dir: str, state: schedule.PlateauState) -> None:
  records.write_atomically(os.path.join(model_dir, STATE_FILE),
           lambda f: json.dump(dataclasses.asdict(state), f, indent=2))


def append_history(model_dir: str, record: Dict[str, float]) -> None:
  """Adds one evaluation's line to history.jsonl."""
  with open(os.path.join(model_dir, HISTORY_FILE), 'a', encoding='utf-8') as f:
    f.write(json.dumps(record) + '\n')


def read_history(model_dir: str) -> List[Dict[str, float]]:
  """Every evaluation recorded in history.jsonl, oldest first ([] before the first)."""
  path = os.path.join(model_dir, HISTORY_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def keep_best(model_dir: str, step: int, metrics: Dict[str, float]) -> None:
  """Copies checkpoint `step` to model_dir/best/ with its metrics, replacing the previous."""
  _keep(model_dir, step, metrics, os.path.join(model_dir, BEST_DIR))


def keep_cycle_end(model_dir: str, step: int, epoch: float, metrics: Dict[str, float]) -> str:
  """Copies checkpoint `step`, the end of a `restarts` cycle at `epoch`, to
  model_dir/cycles/epoch-EPOCH/ with its metrics (the Estimator's own rotate away); returns
  that directory, which `resolve_checkpoint` accepts."""
  directory = os.path.join(model_dir, CYCLES_DIR, f'epoch-{epoch:g}')
  _keep(model_dir, step, metrics, directory)
  return directory


def _keep(model_dir: str, step: int, metrics: Dict[str, float], directory: str) -> None:
  """Copies checkpoint `step` and its metrics.json to `directory`, replacing what was there."""
  tmp = directory + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)  # and its parents (cycles/)
  files = glob.glob(os.path.join(model_dir, f'model.ckpt-{step}') + '.*')
  if not files:  # a copy naming a missing checkpoint would pass for one until restored
    raise FileNotFoundError(f'{model_dir}: no checkpoint model.ckpt-{step} to keep in '
                            f'{directory}')
  for path in files:
    shutil.copy2(path, tmp)
  with open(os.path.join(tmp, 'checkpoint'), 'w', encoding='utf-8') as f:
    f.write(f'model_checkpoint_path: "model.ckpt-{step}"\n')
  with open(os.path.join(tmp, BEST_METRICS_FILE), 'w', encoding='utf-8') as f:
    json.dump(dict(step=step, **metrics), f, indent=2)
  shutil.rmtree(directory, ignore_errors=True)
  os.replace(tmp, directory)
