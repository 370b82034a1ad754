"""The `tf.estimator` model_fn: loss, the paper's optimiser, metrics and predictions."""

import dataclasses
import warnings
from typing import Optional, Sequence

import tensorflow as tf

with warnings.catch_warnings():
  # tensorflow-addons 0.23 announces at import that it is no longer developed; it is pinned
  # with TF 2.15 on purpose (setup.py), so the notice would only repeat on every command.
  warnings.simplefilter('ignore')
  import tensorflow_addons as tfa

from alexnet_tf import finetune, lrn, precision
from alexnet_tf.config import FP32, ModelConfig, TrainConfig
from alexnet_tf.layers import WEIGHTS
from alexnet_tf.model import build_alexnet
from alexnet_tf.schedule import LearningRateFn

tf1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys

TOP_K = 5
# Keys of the PREDICT outputs and of the serving signature.
CLASSES = 'classes'  # int64 [batch]
PROBABILITIES = 'probabilities'  # float32 [batch, num_classes]
TOP_K_CLASSES = 'top5_classes'  # int64 [batch, 5]
TOP_K_PROBABILITIES = 'top5_probabilities'  # float32 [batch, 5]
TOP_K_NAMES = 'top5_class_names'  # string [batch, 5]
LOGITS = 'logits'  # float32 [batch, num_classes] (centre crop) or [batch, 10, num_classes]
# Per-class EVAL metrics (tfa.metrics): float32 [num_classes] and int32 [num_classes, 2, 2].
PER_CLASS_F1 = 'per_class_f1'
PER_CLASS_CONFUSION = 'per_class_confusion'  # per class [[tn, fp], [fn, tp]] of the top-1 class


def weight_decay_loss(weight_decay: float, variables: Sequence[tf.Variable]) -> tf.Tensor:
  """0.0005 / 2 * ||w||^2 over the weights (not the biases) of the `variables` that train
  (frozen ones are constants: decaying them would only change the loss's value).

  With momentum SGD this is the paper's update v <- 0.9 v - 0.0005 lr w - lr grad.
  Biases are excluded, as in cuda-convnet's layer definitions (wcBias 0): decaying the
  bias of 1 that keeps the ReLUs alive would work against its purpose.
  """
  weights = [v for v in variables if _is_weight(v)]
  if not weights:
    raise ValueError('no weight variables found for weight decay')
  # l2_loss(w) = ||w||^2 / 2 in one reduction, and its gradient is one multiply. The
  # reduce_sum(square(w)) spelling writes a copy of every weight (fc6's 38M) forward and two
  # more backward: the ImageNet step ran 7-11% faster without them (README, Performance).
  return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(w) for w in weights]),
                     name='weight_decay')


def _is_weight(variable) -> bool:
  # Under MirroredStrategy replica i > 0 sees its own copy's op, named '.../weights/replica_i'.
  parts = variable.op.name.split('/')
  return parts[-1] == WEIGHTS or (len(parts) > 2 and parts[-2] == WEIGHTS and
                                  parts[-1].startswith('replica_'))


def portable_model_config(model_config: ModelConfig,
                          export_precision: str = FP32) -> ModelConfig:
  """The net as PREDICT (exported) graphs build it: no device pins (TF Serving places the
  graph on whatever the server has), the LRN `lrn.resolve` gives exported graphs (no op
  of our kernel library: TF Serving has none) and `export_precision` (fp32 unless asked:
  batch-1 latency is best in fp32, and any server runs it) whatever the training precision.
  The variables and their names are the same, so training checkpoints load unchanged."""
  return dataclasses.replace(
      model_config, tower_devices=('',) * model_config.num_towers,
      lrn_impl=lrn.resolve(model_config.lrn_impl, lrn.EXPORT), precision=export_precision)


def make_model_fn(model_config: ModelConfig, train_config: TrainConfig,
                  learning_rate: Optional[LearningRateFn] = None,
                  class_names: Optional[Sequence[str]] = None,
                  image_summaries: int = 3, export_precision: str = FP32):
  """Returns `model_fn(features, labels, mode)` for `tf.estimator.Estimator`.

  Args:
    model_config: the network.
    train_config: optimiser settings (momentum, weight decay).
    learning_rate: global_step -> learning rate tensor; needed for TRAIN.
    class_names: names of the classes, for the top-5 names output; None gives their indices.
    image_summaries: how many input images to show in TensorBoard (TRAIN only).
    export_precision: the compute precision of PREDICT (exported) graphs; TRAIN and EVAL
      compute in model_config.precision. The logits, loss and metrics are float32 in all.

  The features are `{'image': float32 [batch, S, S, 3]}`, or `[batch, 10, S, S, 3]` for
  10-crop evaluation, where the softmaxes of the ten crops are averaged (paper section 4.1).
  Labels are int32 [batch].
  """
  if class_names is not None and len(class_names) != model_config.num_classes:
    raise ValueError(f'{len(class_names)} class names for a {model_config.num_classes}-class '
                     f'model')
  names = list(class_names) if class_names else [str(i) for i in range(model_config.num_classes)]

  portable_config = portable_model_config(model_config, export_precision)

  def model_fn(features, labels, mode):
    images = features['image'] if isinstance(features, dict) else features
    training = mode == ModeKeys.TRAIN
    net_config = portable_config if mode == ModeKeys.PREDICT else model_config
    logits, probabilities = _logits_and_probabilities(images, net_config, training)
    predictions = _predictions(logits, probabilities, names)
    if mode == ModeKeys.PREDICT:
      # Before any loss: serving graphs carry no labels, optimiser or metrics.
      return tf.estimator.EstimatorSpec(
          mode, predictions=predictions,
          export_outputs={'serving_default': tf.estimator.export.PredictOutput(predictions)})

    labels = tf.cast(labels, tf.int32)
    # All of the net's unless fine-tuning freezes some layers.
    variables = finetune.trainable_variables(tf1.trainable_variables(), model_config,
                                             train_config)
    if logits.shape.rank == 2 and training and train_config.label_smoothing:
      # Targets of 1 - s + s / K and s / K: the training loss only; EVAL reports the plain one.
      cross_entropy = tf1.losses.softmax_cross_entropy(
          tf.one_hot(labels, model_config.num_classes), logits,
          label_smoothing=train_config.label_smoothing)
    elif logits.shape.rank == 2:
      cross_entropy = tf1.losses.sparse_softmax_cross_entropy(labels, logits)
    else:  # 10-crop: the cross-entropy of the averaged softmax that makes the prediction
      cross_entropy = -tf.reduce_mean(tf.math.log(tf.maximum(
          tf.gather(probabilities, labels, batch_dims=1), 1e-12)))
    loss = tf.add(cross_entropy, weight_decay_loss(train_config.weight_decay, variables),
                  name='total_loss')
    in_top1 = tf.equal(predictions[CLASSES], tf.cast(labels, tf.int64))
    in_top5 = tf.nn.in_top_k(predictions=probabilities, targets=labels, k=TOP_K)

    if mode == ModeKeys.EVAL:
      metrics = {
          'top1_accuracy': tf1.metrics.mean(tf.cast(in_top1, tf.float32)),
          'top5_accuracy': tf1.metrics.mean(tf.cast(in_top5, tf.float32)),
          'cross_entropy': tf1.metrics.mean(cross_entropy),
      }
      per_class = per_class_metrics(model_config.num_classes)
      update_per_class_metrics(per_class, labels, probabilities)
      metrics.update(per_class)
      return tf.estimator.EstimatorSpec(mode, loss=loss, predictions=predictions,
                                        eval_metric_ops=metrics)

    if learning_rate is None:
      raise ValueError('make_model_fn needs a learning_rate schedule to train')
    global_step = tf1.train.get_or_create_global_step()
    lr = tf.identity(learning_rate(global_step), name='learning_rate')
    tf1.summary.scalar('learning_rate', lr)
    tf1.summary.scalar('cross_entropy', cross_entropy)
    tf1.summary.scalar('train_top1_accuracy', tf.reduce_mean(tf.cast(in_top1, tf.float32)))
    tf1.summary.scalar('train_top5_accuracy', tf.reduce_mean(tf.cast(in_top5, tf.float32)))
    if image_summaries:
      # Inputs are mean-subtracted 0-255 values; rescale each image to [0, 1] for display.
      shown = images[:image_summaries]
      lo = tf.reduce_min(shown, axis=[1, 2, 3], keepdims=True)
      hi = tf.reduce_max(shown, axis=[1, 2, 3], keepdims=True)
      tf1.summary.image('inputs', (shown - lo) / tf.maximum(hi - lo, 1e-6),
                        max_outputs=image_summaries)
    optimizer = precision.loss_scaled(
        tf1.train.MomentumOptimizer(lr, momentum=train_config.momentum,
                                    use_nesterov=train_config.nesterov), model_config.precision)
    # Only `variables` get gradients and momentum slots (the frozen layers, none).
    grads_and_vars = finetune.scale_restored_gradients(
        optimizer.compute_gradients(loss, var_list=variables), model_config, train_config)
    # Batch normalisation's moving statistics (none with LRN) update with every step.
    with tf.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)):
      train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

  return model_fn


def per_class_metrics(num_classes: int):
  """tfa's per-class F1 and one-vs-rest confusion counts of the top-1 prediction, empty.

  Keras metric objects: the Estimator takes them in eval_metric_ops as they are (their
  variables are in no collection, so they cannot be given as (value, update_op) pairs), and
  `evaluate --saved-model` updates the same objects eagerly, batch by batch.
  """
  return {PER_CLASS_F1: tfa.metrics.F1Score(num_classes, average=None, threshold=None,
                                            name=PER_CLASS_F1),
          PER_CLASS_CONFUSION: tfa.metrics.MultiLabelConfusionMatrix(
              num_classes, dtype=tf.int32, name=PER_CLASS_CONFUSION)}


def update_per_class_metrics(metrics, labels, probabilities) -> None:
  """Adds a batch: labels int [batch], probabilities float32 [batch, num_classes]."""
  num_classes = probabilities.shape[-1]
  truth = tf.one_hot(labels, num_classes, dtype=tf.int32)
  # threshold=None: F1Score counts the top class as the prediction.
  metrics[PER_CLASS_F1].update_state(tf.cast(truth, tf.float32), probabilities)
  predicted = tf.one_hot(tf.argmax(probabilities, axis=-1), num_classes, dtype=tf.int32)
  metrics[PER_CLASS_CONFUSION].update_state(truth, predicted)


def _logits_and_probabilities(images, model_config, training):
  """Logits and softmax; a [batch, 10, S, S, 3] input gets per-crop logits, averaged softmax."""
  if images.shape.rank == 5:
    crops = images.shape[1]
    size = model_config.image_size
    logits, _ = build_alexnet(tf.reshape(images, [-1, size, size, 3]), model_config, training)
    logits = tf.reshape(logits, [-1, crops, model_config.num_classes])
    return logits, tf.reduce_mean(tf.nn.softmax(logits), axis=1)
  logits, _ = build_alexnet(images, model_config, training)
  return logits, tf.nn.softmax(logits)


def _predictions(logits, probabilities, names):
  top_probabilities, top_classes = tf.nn.top_k(probabilities, k=min(TOP_K, len(names)))
  return {
      CLASSES: tf.argmax(probabilities, axis=-1),
      PROBABILITIES: probabilities,
      TOP_K_CLASSES: tf.cast(top_classes, tf.int64),
      TOP_K_PROBABILITIES: top_probabilities,
      TOP_K_NAMES: tf.gather(tf.constant(names), top_classes),
      LOGITS: logits,
  }
