"""Every setting of alexnet_tf in one place: frozen dataclasses with the paper's defaults.

A `Config` bundles the model (the layer table), the input pipeline and the training recipe;
each dataclass checks its own fields and `Config` the rules between them. The named
configurations (the paper's ImageNet net, Caffe's, the CIFAR-10 recipe) are in `recipes`.
Entry points parse flags and build a new config with `dataclasses.replace`; library code
only ever receives config objects.
"""

import dataclasses
from typing import Optional, Tuple

FULL = 'full'  # the layer reads the maps of both towers (the paper's cross-GPU connection)
OWN = 'own'  # the layer reads only its own tower's maps

# The names of alexnet_tf.lrn.IMPLEMENTATIONS (the registry, which imports TensorFlow), for
# ModelConfig validation and flag choices; a test keeps the two equal.
LRN_IMPLS = ('reference', 'banded', 'banded_grad', 'fused')
PADDINGS = ('VALID', 'SAME')
# Compute precisions (alexnet_tf.precision): variables, loss and metrics stay float32 in all.
FP32, BF16, FP16 = 'fp32', 'bf16', 'fp16'
PRECISIONS = (FP32, BF16, FP16)
# What normalises the conv layers: the paper's LRN (section 3.3), or batch normalisation.
LRN, BATCH = 'lrn', 'batch'
NORMALIZATIONS = (LRN, BATCH)


def _require(condition: bool, message: str) -> None:
  """ValueError(message) unless condition: the dataclasses' field checks."""
  if not condition:
    raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class LRNConfig:
  """Local response normalisation b = a / (bias + alpha * sum_{window} a^2)^beta.

  The window covers `2 * depth_radius + 1` adjacent maps. In TF terms alpha is *not* divided
  by the window size, so the paper's text is alpha=1e-4 and Caffe's is alpha=1e-4/5.
  """
  depth_radius: int = 2  # the paper's n = 5 adjacent maps, 2 on each side
  bias: float = 2.0  # the paper's k = 2
  alpha: float = 1e-4  # the paper's alpha, used as written (TF does not divide it by n)
  beta: float = 0.75  # the paper's beta

  def __post_init__(self):
    _require(self.depth_radius >= 0,
             f'LRNConfig.depth_radius must be >= 0, got {self.depth_radius}')
    _require(self.bias > 0, f'LRNConfig.bias must be positive, got {self.bias}')
    _require(self.alpha >= 0 and self.beta >= 0,
             f'LRNConfig.alpha and beta must be >= 0, got {self.alpha}, {self.beta}')


PAPER_LRN = LRNConfig()
# Krizhevsky's cuda-convnet and Caffe divide alpha by n, and Caffe's bvlc_alexnet uses k=1:
# the variant needed to reproduce imported Caffe weights.
CAFFE_LRN = LRNConfig(depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75)


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One row of the conv part of the layer table. ReLU always follows the convolution."""
  name: str
  filters: int  # total over all towers; each of T towers holds filters / T
  kernel: int
  stride: int = 1
  padding: str = 'SAME'  # 'VALID' or 'SAME'
  reads: str = OWN  # FULL: both towers' maps (or the image); OWN: this tower's maps only
  bias_init: float = 0.0
  lrn: bool = False  # LRN after the ReLU (the paper's order: ReLU, LRN, pool)
  pool: bool = False  # overlapping max pooling after the ReLU/LRN
  init_stddev: Optional[float] = None  # None: the model's weight_stddev

  def __post_init__(self):
    _require(min(self.filters, self.kernel, self.stride) >= 1,
             f'{self.name}: filters, kernel and stride must be >= 1, got {self.filters}, '
             f'{self.kernel}, {self.stride}')
    _require(self.padding in PADDINGS,
             f'{self.name}: padding must be VALID or SAME, got {self.padding!r}')
    _require(self.reads in (FULL, OWN),
             f'{self.name}: reads must be {FULL!r} or {OWN!r}, got {self.reads!r}')
    _require(self.init_stddev is None or self.init_stddev > 0,
             f'{self.name}: init_stddev must be None or positive, got {self.init_stddev}')


@dataclasses.dataclass(frozen=True)
class DenseLayer:
  """A hidden fully connected layer (ReLU, then dropout when training); always reads FULL."""
  name: str
  units: int  # total over all towers
  bias_init: float = 1.0
  init_stddev: Optional[float] = None  # None: the model's weight_stddev

  def __post_init__(self):
    _require(self.units >= 1, f'{self.name}: units must be >= 1, got {self.units}')
    _require(self.init_stddev is None or self.init_stddev > 0,
             f'{self.name}: init_stddev must be None or positive, got {self.init_stddev}')


def layer_names(model: 'ModelConfig') -> Tuple[str, ...]:
  """The names of the net's layers with variables, input to output (conv1 ... fc8)."""
  return tuple(l.name for l in model.conv_layers + model.dense_layers) + (model.logits_name,)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network: a layer table plus the shared hyper-parameters of its layers."""
  name: str
  image_size: int  # square input side the table is built for
  conv_layers: Tuple[ConvLayer, ...]
  dense_layers: Tuple[DenseLayer, ...]
  num_classes: int
  logits_name: str = 'fc8'  # the classifier layer, reads FULL, no ReLU or dropout
  logits_bias_init: float = 0.0  # paper 5 sets 1 only on conv2/4/5 and the hidden fc layers
  logits_init_stddev: Optional[float] = None  # None: weight_stddev
  weight_stddev: float = 0.01  # paper 5: all weights from N(0, 0.01)
  dropout_rate: float = 0.5  # paper 4.2: dropout 0.5 on fc6 and fc7
  lrn: LRNConfig = PAPER_LRN  # paper 3.3 constants
  lrn_impl: str = 'fused'  # the fastest exact LRN (C++ kernel; 'reference' = TF's op)
  # Paper 3.3 as its two GPUs computed it: each tower normalises its own maps. True: one LRN
  # across all maps of the layer, as Caffe's bvlc_alexnet does (imported weights need it).
  lrn_across_towers: bool = False
  pool_size: int = 3  # paper 3.4: overlapping pooling, z = 3
  pool_stride: int = 2  # paper 3.4: s = 2
  pool_padding: str = 'VALID'  # the ImageNet sizes divide exactly (55 -> 27 -> 13 -> 6)
  num_towers: int = 2  # paper 3.2: the net is split over two GPUs; 1 = one device, not split
  tower_devices: Tuple[str, ...] = ('/gpu:0', '/gpu:1')  # soft placement falls back to CPU
  # The dtype the layers compute in (variables stay float32): fp32 unless asked, because
  # bf16 pays only on hardware with bf16 matrix units; `train --precision auto` decides.
  precision: str = FP32
  # LRN where the table asks for it (paper 3.3). BATCH: batch normalisation after every conv
  # (before its ReLU) and no LRN, as the Keras ports did: not the paper's, offered to compare.
  normalization: str = LRN

  def __post_init__(self):
    if self.num_towers < 1:
      raise ValueError(f'num_towers must be >= 1, got {self.num_towers}')
    if len(self.tower_devices) < self.num_towers:
      raise ValueError(f'{self.num_towers} towers need {self.num_towers} tower_devices, '
                       f'got {self.tower_devices!r}')
    if self.lrn_impl not in LRN_IMPLS:
      raise ValueError(f'lrn_impl must be one of {LRN_IMPLS}, got {self.lrn_impl!r}')
    _require(self.precision in PRECISIONS,
             f'precision must be one of {PRECISIONS}, got {self.precision!r}')
    _require(self.normalization in NORMALIZATIONS,
             f'normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}')
    if not self.conv_layers:
      raise ValueError('the layer table needs at least one conv layer')
    if self.conv_layers[0].reads != FULL:
      raise ValueError(f'{self.conv_layers[0].name} reads the image, so it must read {FULL!r}')
    names = list(layer_names(self))
    if len(set(names)) != len(names):
      raise ValueError(f'layer names must be unique, got {names}')
    for layer in self.conv_layers + self.dense_layers:
      width = layer.filters if isinstance(layer, ConvLayer) else layer.units
      # The integer division pitfall: 2 towers of 95 // 2 kernels would silently lose one.
      if width % self.num_towers:
        raise ValueError(f'{layer.name}: {width} units do not split evenly over '
                         f'{self.num_towers} towers')
    _require(self.image_size >= 1 and self.num_classes >= 1,
             f'image_size and num_classes must be >= 1, got {self.image_size}, '
             f'{self.num_classes}')
    _require(self.weight_stddev > 0, f'weight_stddev must be positive, got {self.weight_stddev}')
    _require(0 <= self.dropout_rate < 1, f'dropout_rate must be in [0, 1), got {self.dropout_rate}')
    if self.lrn_across_towers and self.num_towers > 1:
      for layer in self.conv_layers:
        # A tower's window borrows depth_radius maps from each neighbour, which must have them.
        _require(not layer.lrn or layer.filters // self.num_towers >= self.lrn.depth_radius,
                 f'{layer.name}: an LRN across towers needs at least depth_radius='
                 f'{self.lrn.depth_radius} maps per tower, got {layer.filters // self.num_towers}')
    _require(self.pool_size >= 1 and self.pool_stride >= 1 and self.pool_padding in PADDINGS,
             f'pooling needs size and stride >= 1 and VALID or SAME padding, got '
             f'{self.pool_size}, {self.pool_stride}, {self.pool_padding!r}')


SUBTRACT_MEAN_MODES = ('pixel', 'rgb', 'none')


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The input pipeline: augmentation of the paper's section 4.1 and test-time crops."""
  crop_size: int  # side of the square crops fed to the net (the model's image_size)
  pad: int = 0  # zero padding around the stored image before the random crop
  random_flip: bool = True  # paper 4.1: horizontal reflections
  pca_lighting_std: float = 0.1  # paper 4.1: alpha_i ~ N(0, 0.1); 0 disables
  subtract_mean: str = 'pixel'  # 'pixel': the per-pixel mean image (paper 2); 'rgb'; 'none'
  # None: the dataset's own mean (paper 2). A fixed (R, G, B) on 0-255, with subtract_mean
  # 'rgb': the mean pretrained weights were trained with, whatever data they now see.
  mean_rgb: Optional[Tuple[float, float, float]] = None
  shuffle_buffer: int = 10000  # examples; large enough to mix shards of different classes
  cycle_length: int = 4  # shards read in parallel
  cache_decoded: bool = False  # keep decoded images in memory (small datasets only)

  def __post_init__(self):
    if self.subtract_mean not in SUBTRACT_MEAN_MODES:
      raise ValueError(f'DataConfig.subtract_mean must be one of {SUBTRACT_MEAN_MODES}, got '
                       f'{self.subtract_mean!r}')
    _require(self.crop_size > 0, f'DataConfig.crop_size must be positive, got {self.crop_size}')
    _require(self.mean_rgb is None or (
        self.subtract_mean == 'rgb' and isinstance(self.mean_rgb, tuple) and
        len(self.mean_rgb) == 3 and
        all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in self.mean_rgb)),
             f'DataConfig.mean_rgb must be None or a tuple of 3 values on 0-255 with '
             f'subtract_mean="rgb", got {self.mean_rgb!r} with {self.subtract_mean!r}')
    _require(self.pad >= 0, f'DataConfig.pad must be >= 0, got {self.pad}')
    _require(self.pca_lighting_std >= 0,
             f'DataConfig.pca_lighting_std must be >= 0, got {self.pca_lighting_std}')
    _require(self.shuffle_buffer >= 1,
             f'DataConfig.shuffle_buffer must be >= 1, got {self.shuffle_buffer}')
    _require(self.cycle_length >= 1,
             f'DataConfig.cycle_length must be >= 1, got {self.cycle_length}')


# plateau: the paper's rule; step: fixed /10 steps; linear: warm-up, then linear decay to 0;
# restarts: warm-up, then cosine cycles to 0 that grow longer (SGDR).
SCHEDULES = ('plateau', 'step', 'linear', 'restarts')


def cycle_ends(first: float, mult: float, warmup: float, upto: float) -> Tuple[float, ...]:
  """Where the 'restarts' schedule's cycles end, up to the first at or past `upto`: in
  epochs, or in steps when the lengths are given in steps (`schedule.cycle_end_steps`)."""
  ends, length = [warmup + first], first
  while ends[-1] < upto - 1e-9:
    length *= mult
    ends.append(ends[-1] + length)
  return tuple(ends)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The optimisation recipe of paper section 5."""
  batch_size: int = 128  # paper 5
  learning_rate: float = 0.01  # paper 5: initial rate, equal for all layers
  momentum: float = 0.9  # paper 5
  nesterov: bool = False  # paper 5 uses plain momentum
  weight_decay: float = 5e-4  # paper 5; applied as 0.0005/2 * ||w||^2 on weights only
  schedule: str = 'plateau'  # paper 5: divide by 10 when validation error stops improving
  lr_decay_factor: float = 0.1  # paper 5: divided by 10
  plateau_patience: int = 2  # evaluations without improvement before a decay
  max_decays: int = 3  # paper 5: "reduced three times prior to termination"
  step_boundaries_epochs: Tuple[float, ...] = (30.0, 60.0, 80.0)  # the fixed-step schedule
  epochs: float = 90.0  # paper 5: roughly 90 cycles through the training set
  max_steps: Optional[int] = None  # overrides epochs when set
  warmup_epochs: float = 0.0  # linear, restarts: epochs of rising rate from 0; the paper: none
  restart_epochs: float = 12.0  # 'restarts': the first cycle after warm-up (SGDR's T_0)
  restart_mult: float = 2.0  # 'restarts': each cycle twice the last (SGDR's best T_mult)
  label_smoothing: float = 0.0  # paper 5 trains on hard targets
  eval_every_epochs: float = 1.0  # plateau decisions need a validation error each epoch
  keep_checkpoints: int = 5  # the last N, plus the best one kept separately
  seed: Optional[int] = None  # graph-level seed; None: nondeterministic
  # Fine-tuning (alexnet_tf.finetune): off by default, the paper trains from scratch.
  init_from: Optional[str] = None  # a run directory to warm-start from; None: from scratch
  trainable: Tuple[str, ...] = ()  # the layers that train (the rest frozen); (): all
  restored_lr_scale: float = 1.0  # rate factor of the restored layers that train (Caffe's lr_mult)

  def __post_init__(self):
    _require(self.batch_size >= 1, f'TrainConfig.batch_size must be >= 1, got {self.batch_size}')
    _require(self.learning_rate > 0,
             f'TrainConfig.learning_rate must be positive, got {self.learning_rate}')
    _require(0 <= self.momentum < 1, f'TrainConfig.momentum must be in [0, 1), got {self.momentum}')
    _require(self.weight_decay >= 0,
             f'TrainConfig.weight_decay must be >= 0, got {self.weight_decay}')
    if self.schedule not in SCHEDULES:
      raise ValueError(f'TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}')
    _require(0 < self.lr_decay_factor <= 1,
             f'TrainConfig.lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}')
    _require(self.plateau_patience >= 1,
             f'TrainConfig.plateau_patience must be >= 1, got {self.plateau_patience}')
    _require(self.max_decays >= 0, f'TrainConfig.max_decays must be >= 0, got {self.max_decays}')
    bounds = tuple(self.step_boundaries_epochs)
    _require(all(b > 0 for b in bounds) and all(b > a for a, b in zip(bounds, bounds[1:])),
             f'TrainConfig.step_boundaries_epochs must be positive and increasing, got {bounds}')
    _require(self.epochs > 0, f'TrainConfig.epochs must be positive, got {self.epochs}')
    _require(self.max_steps is None or self.max_steps >= 1,
             f'TrainConfig.max_steps must be None or >= 1, got {self.max_steps}')
    _require(self.warmup_epochs >= 0 and (self.warmup_epochs < self.epochs or
                                          self.max_steps is not None),
             f'TrainConfig.warmup_epochs must be >= 0 and shorter than the run, got '
             f'{self.warmup_epochs} of {self.epochs} epochs')
    _require(self.restart_epochs > 0 and self.restart_mult >= 1,
             f'TrainConfig.restart_epochs must be positive and restart_mult >= 1, got '
             f'{self.restart_epochs} and {self.restart_mult}')
    if self.schedule == 'restarts' and self.max_steps is None:
      # A run that stops inside a cycle stops at a high rate: its weights are not a result.
      ends = cycle_ends(self.restart_epochs, self.restart_mult, self.warmup_epochs, self.epochs)
      _require(abs(ends[-1] - self.epochs) < 1e-6,
               f'TrainConfig.epochs must end a cycle of the restarts schedule, got '
               f'{self.epochs}; cycles end at {", ".join(f"{e:g}" for e in ends)}')
    _require(0 <= self.label_smoothing < 1,
             f'TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}')
    _require(self.eval_every_epochs > 0,
             f'TrainConfig.eval_every_epochs must be positive, got {self.eval_every_epochs}')
    _require(self.keep_checkpoints >= 1,
             f'TrainConfig.keep_checkpoints must be >= 1, got {self.keep_checkpoints}')
    _require(self.init_from is None or bool(self.init_from),
             'TrainConfig.init_from must be None or a run directory, got an empty string')
    names = tuple(self.trainable)
    _require(len(set(names)) == len(names) and all(isinstance(n, str) and n for n in names),
             f'TrainConfig.trainable must name distinct layers, got {names}')
    # Frozen random layers, or a rate scale with nothing restored, are mistakes, not recipes.
    _require(self.init_from is not None or (not names and self.restored_lr_scale == 1.0),
             'TrainConfig.trainable and restored_lr_scale need init_from (frozen layers must '
             'hold restored weights)')
    _require(self.restored_lr_scale > 0,
             f'TrainConfig.restored_lr_scale must be positive, got {self.restored_lr_scale}')


@dataclasses.dataclass(frozen=True)
class Config:
  """The whole run; the rules between its parts are checked here, once."""
  model: ModelConfig
  data: DataConfig
  train: TrainConfig

  def __post_init__(self):
    if self.data.crop_size != self.model.image_size:
      raise ValueError(f'the {self.model.name} net takes {self.model.image_size}x'
                       f'{self.model.image_size} inputs, but DataConfig.crop_size is '
                       f'{self.data.crop_size}: they must be equal')
    layers = layer_names(self.model)
    unknown = [name for name in self.train.trainable if name not in layers]
    _require(not unknown, f'TrainConfig.trainable: {", ".join(unknown)} is not a layer of the '
                          f'{self.model.name} net, whose layers are {", ".join(layers)}')
    # The classifier is always new (the user's classes): frozen, it would stay random.
    _require(not self.train.trainable or self.model.logits_name in self.train.trainable,
             f'TrainConfig.trainable must include the new classifier '
             f'{self.model.logits_name}, got {",".join(self.train.trainable)}')

def to_dict(config: Config) -> dict:
  """A JSON-ready dict of the whole config (saved next to checkpoints as `config.json`)."""
  return dataclasses.asdict(config)


def from_dict(raw: dict) -> Config:
  """The inverse of `to_dict`; unknown or missing fields raise TypeError."""
  model = dict(raw['model'])
  model['conv_layers'] = tuple(ConvLayer(**layer) for layer in model['conv_layers'])
  model['dense_layers'] = tuple(DenseLayer(**layer) for layer in model['dense_layers'])
  model['lrn'] = LRNConfig(**model['lrn'])
  model['tower_devices'] = tuple(model['tower_devices'])
  data = dict(raw['data'])
  if data.get('mean_rgb') is not None:
    data['mean_rgb'] = tuple(data['mean_rgb'])
  train = dict(raw['train'])
  train['step_boundaries_epochs'] = tuple(train['step_boundaries_epochs'])
  train['trainable'] = tuple(train.get('trainable', ()))  # absent in runs before fine-tuning
  return Config(model=ModelConfig(**model), data=DataConfig(**data),
                train=TrainConfig(**train))
