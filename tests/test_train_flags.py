"""The training entry point's flags become the config (and nothing else reads them)."""

import pytest

from alexnet_tf import train


def _config(*flags):
  args = train.build_parser().parse_args(['--data-dir', 'unused', *flags])
  return train.config_from_args(args)[0]


def test_defaults_are_the_cifar10_recipe():
  config = _config()
  assert config.model.name == 'cifar10'
  assert config.train.schedule == 'step'
  assert config.train.step_boundaries_epochs == (10.0, 13.0)


def test_flags_override_the_recipe():
  config = _config('--epochs', '30', '--decay-epochs', '20, 26', '--learning-rate', '0.02',
                   '--batch-size', '64', '--lrn-impl', 'reference', '--seed', '3')
  assert config.train.epochs == 30.0
  assert config.train.step_boundaries_epochs == (20.0, 26.0)
  assert config.train.learning_rate == 0.02
  assert config.train.batch_size == 64
  assert config.train.seed == 3
  assert config.model.lrn_impl == 'reference'


@pytest.mark.parametrize('text', ['20,x', '26,20', '0,5', '', '5,5'])
def test_bad_decay_epochs_are_named(text):
  with pytest.raises(ValueError, match='--decay-epochs'):
    _config('--decay-epochs', text)


def test_one_tower_device_builds_the_unsplit_net():
  config = _config('--tower-devices', '/cpu:0')
  assert config.model.num_towers == 1
  assert config.model.tower_devices == ('/cpu:0',)
