"""The config cannot be built invalid: each dataclass checks its own fields, Config the rules
between them, and the entry point turns a bad flag into one line and exit status 2."""

import dataclasses

import pytest

from alexnet_tf import config as cfg
from alexnet_tf import recipes
from alexnet_tf import train

CIFAR = recipes.get_config('cifar10')


@pytest.mark.parametrize('changes, message', [
    (dict(subtract_mean='median'), 'subtract_mean must be one of'),
    (dict(crop_size=0), 'crop_size must be positive'),
    (dict(pad=-1), 'pad must be >= 0'),
    (dict(pca_lighting_std=-0.1), 'pca_lighting_std must be >= 0'),
    (dict(shuffle_buffer=0), 'shuffle_buffer must be >= 1'),
    (dict(cycle_length=0), 'cycle_length must be >= 1'),
])
def test_data_config_rejects_bad_fields(changes, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(CIFAR.data, **changes)


@pytest.mark.parametrize('changes, message', [
    (dict(batch_size=0), 'batch_size must be >= 1'),
    (dict(learning_rate=0.0), 'learning_rate must be positive'),
    (dict(momentum=1.0), r'momentum must be in \[0, 1\)'),
    (dict(weight_decay=-1e-4), 'weight_decay must be >= 0'),
    (dict(schedule='cosine'), 'schedule must be one of'),
    (dict(lr_decay_factor=0.0), r'lr_decay_factor must be in \(0, 1\]'),
    (dict(plateau_patience=0), 'plateau_patience must be >= 1'),
    (dict(max_decays=-1), 'max_decays must be >= 0'),
    (dict(step_boundaries_epochs=(10.0, 5.0)), 'positive and increasing'),
    (dict(epochs=0.0), 'epochs must be positive'),
    (dict(max_steps=0), 'max_steps must be None or >= 1'),
    (dict(eval_every_epochs=0.0), 'eval_every_epochs must be positive'),
    (dict(keep_checkpoints=0), 'keep_checkpoints must be >= 1'),
])
def test_train_config_rejects_bad_fields(changes, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(CIFAR.train, **changes)


def test_config_requires_the_crop_to_be_the_net_input():
  with pytest.raises(ValueError, match='takes 32x32 inputs, but DataConfig.crop_size is 28'):
    dataclasses.replace(CIFAR, data=dataclasses.replace(CIFAR.data, crop_size=28))
  imagenet = recipes.get_config('imagenet')
  with pytest.raises(ValueError, match='takes 227x227 inputs'):
    cfg.Config(imagenet.model, CIFAR.data, imagenet.train)


@pytest.mark.parametrize('name', sorted(recipes.CONFIGS))
def test_configs_round_trip_through_their_dict(name):
  config = recipes.get_config(name)
  assert cfg.from_dict(cfg.to_dict(config)) == config


@pytest.mark.parametrize('flags, message', [
    (['--batch-size', '0'], 'TrainConfig.batch_size must be >= 1, got 0'),
    (['--batch-size', '-4'], 'TrainConfig.batch_size must be >= 1, got -4'),
    (['--max-steps', '0'], 'TrainConfig.max_steps must be None or >= 1, got 0'),
    (['--epochs', '0'], 'TrainConfig.epochs must be positive, got 0.0'),
    (['--eval-every', '-1'], 'TrainConfig.eval_every_epochs must be positive, got -1.0'),
])
def test_a_bad_flag_value_is_one_line_and_exit_status_2(capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    train.main(['--data-dir', 'unused', *flags])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert error[-1].endswith(message)
  assert not any('Traceback' in line for line in error)


@pytest.mark.parametrize('make, message', [
    (lambda: cfg.LRNConfig(bias=0.0), 'LRNConfig.bias must be positive'),
    (lambda: cfg.ConvLayer('c', 0, 3), 'c: filters, kernel and stride must be >= 1'),
    (lambda: cfg.ConvLayer('c', 8, 3, padding='same'), 'c: padding must be VALID or SAME'),
    (lambda: cfg.ConvLayer('c', 8, 3, reads='both'), "c: reads must be 'full' or 'own'"),
    (lambda: cfg.DenseLayer('fc', 0), 'fc: units must be >= 1'),
    (lambda: dataclasses.replace(CIFAR.model, dropout_rate=1.0),
     r'dropout_rate must be in \[0, 1\)'),
    (lambda: dataclasses.replace(CIFAR.model, lrn_impl='fast'), 'lrn_impl must be one of'),
])
def test_layer_and_model_fields_are_checked(make, message):
  with pytest.raises(ValueError, match=message):
    make()
