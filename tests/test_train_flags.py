"""The training entry point's flags become the config (and nothing else reads them)."""

import pytest

from alexnet_tf import recipes, train


def _config(*flags):
  args = train.build_parser().parse_args(['--data-dir', 'unused', *flags])
  return train.config_from_args(args)[0]


def test_defaults_are_the_cifar10_recipe():
  config = _config()
  assert config.model.name == 'cifar10'
  assert config.train == recipes.get_config('cifar10').train
  assert config.train.schedule == 'linear'


def test_the_paper_recipe_trains_on_cifar10_data():
  args = train.build_parser().parse_args(['--dataset', 'cifar10_paper'])
  config, paths, _ = train.config_from_args(args)
  assert config.train.schedule == 'step' and config.train.label_smoothing == 0
  assert not config.train.nesterov
  assert paths.data_dir.endswith('data/cifar10')  # downloaded there, as for cifar10


def test_flags_override_the_recipe():
  config = _config('--epochs', '30', '--schedule', 'step', '--decay-epochs', '20, 26',
                   '--learning-rate', '0.02', '--batch-size', '64', '--lrn-impl', 'reference',
                   '--seed', '3')
  assert config.train.epochs == 30.0
  assert config.train.step_boundaries_epochs == (20.0, 26.0)
  assert config.train.learning_rate == 0.02
  assert config.train.batch_size == 64
  assert config.train.seed == 3
  assert config.model.lrn_impl == 'reference'


@pytest.mark.parametrize('text', ['20,x', '26,20', '0,5', '', '5,5'])
def test_bad_decay_epochs_are_named(text):
  with pytest.raises(ValueError, match='--decay-epochs'):
    _config('--schedule', 'step', '--decay-epochs', text)


def test_the_budget_ingredients_have_flags():
  config = _config('--schedule', 'linear', '--warmup-epochs', '2', '--label-smoothing', '0.2',
                   '--no-nesterov', '--normalization', 'batch')
  assert (config.train.warmup_epochs, config.train.label_smoothing) == (2.0, 0.2)
  assert not config.train.nesterov and config.model.normalization == 'batch'
  assert _config('--dataset', 'cifar10_paper', '--nesterov').train.nesterov


@pytest.mark.parametrize('flags, schedule', [
    (['--decay-epochs', '5,7'], 'linear'),  # the default schedule has no steps to move
    (['--schedule', 'plateau', '--warmup-epochs', '1'], 'plateau'),
    (['--restart-epochs', '6'], 'linear'),
])
def test_a_flag_of_another_schedule_is_refused(flags, schedule):
  with pytest.raises(ValueError, match=f'uses {schedule}'):
    _config(*flags)


def test_one_tower_device_builds_the_unsplit_net():
  config = _config('--tower-devices', '/cpu:0')
  assert config.model.num_towers == 1
  assert config.model.tower_devices == ('/cpu:0',)


def test_the_long_recipe_trains_on_cifar10_data_in_cycles():
  args = train.build_parser().parse_args(['--dataset', 'cifar10_long'])
  config, paths, _ = train.config_from_args(args)
  assert config.model == recipes.get_config('cifar10').model
  assert (config.train.schedule, config.train.epochs) == ('restarts', 181.0)
  assert paths.data_dir.endswith('data/cifar10')
  # A shorter first cycle moves every end: 1 + 6 + 12 = 19 epochs is a finished run.
  assert _config('--dataset', 'cifar10_long', '--restart-epochs', '6',
                 '--epochs', '19').train.restart_epochs == 6.0
  with pytest.raises(ValueError, match='cycles end at 13, 37, 85'):
    _config('--dataset', 'cifar10_long', '--epochs', '50')
