"""The Estimator model_fn in TRAIN, EVAL and PREDICT modes, on the small CIFAR-10 net."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import config as cfg
from alexnet_tf import recipes
from alexnet_tf import model_fn as mf
from alexnet_tf import schedule

tf1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys
SOFT_PLACEMENT = tf1.ConfigProto(allow_soft_placement=True)
MODEL = dataclasses.replace(recipes.CIFAR10_MODEL, num_classes=7)
NAMES = [f'class{i}' for i in range(7)]


def _spec(mode, batch=4, ten_crop=False, lr=0.01, weight_decay=5e-4, model=MODEL, **train):
  shape = [batch, 10, 32, 32, 3] if ten_crop else [batch, 32, 32, 3]
  images = tf.constant(np.random.default_rng(0).normal(0, 60, size=shape), tf.float32)
  labels = tf.constant(np.arange(batch) % 7, tf.int32)
  model_fn = mf.make_model_fn(model, cfg.TrainConfig(weight_decay=weight_decay, **train),
                              schedule.constant(lr), NAMES, image_summaries=2)
  return model_fn({'image': images}, None if mode == ModeKeys.PREDICT else labels, mode)


def _run(fetches, steps=1, train_op=None):
  with tf1.Session(config=SOFT_PLACEMENT) as sess:
    sess.run([tf1.global_variables_initializer(), tf1.local_variables_initializer()])
    for _ in range(steps if train_op is not None else 0):
      sess.run(train_op)
    return sess.run(fetches)


def test_predict_builds_no_loss_and_returns_consistent_outputs():
  with tf.Graph().as_default() as graph:
    tf1.set_random_seed(0)
    spec = _spec(ModeKeys.PREDICT)
    assert spec.loss is None and spec.train_op is None
    op_names = {op.name for op in graph.get_operations()}
    assert 'total_loss' not in op_names and not any('Momentum' in n for n in op_names)
    assert not any(n.startswith('weight_decay') for n in op_names)
    out = _run(spec.predictions)
  np.testing.assert_allclose(out[mf.PROBABILITIES].sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(out[mf.CLASSES], out[mf.PROBABILITIES].argmax(axis=1))
  np.testing.assert_array_equal(out[mf.TOP_K_CLASSES][:, 0], out[mf.CLASSES])
  expected_names = np.array(NAMES, dtype=object)[out[mf.TOP_K_CLASSES]].astype(bytes)
  np.testing.assert_array_equal(out[mf.TOP_K_NAMES], expected_names)
  assert set(spec.export_outputs) == {'serving_default'}


def test_per_class_metrics_equal_numpy():
  rng = np.random.default_rng(3)
  metrics = mf.per_class_metrics(4)
  labels, probabilities = rng.integers(0, 4, 50), rng.dirichlet(np.ones(4), 50)
  for batch in (slice(0, 20), slice(20, 50)):  # accumulated over batches
    mf.update_per_class_metrics(metrics, tf.constant(labels[batch]),
                                tf.constant(probabilities[batch], tf.float32))
  predicted = probabilities.argmax(1)
  confusion = metrics[mf.PER_CLASS_CONFUSION].result().numpy()
  f1 = metrics[mf.PER_CLASS_F1].result().numpy()
  for c in range(4):
    tp = np.sum((predicted == c) & (labels == c))
    fp, fn = np.sum((predicted == c) & (labels != c)), np.sum((predicted != c) & (labels == c))
    np.testing.assert_array_equal(confusion[c], [[50 - tp - fp - fn, fp], [fn, tp]])
    assert f1[c] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-5)


def test_ten_crop_averages_the_softmax_of_the_crops():
  with tf.Graph().as_default():
    tf1.set_random_seed(0)
    spec = _spec(ModeKeys.PREDICT, batch=2, ten_crop=True)
    out = _run(spec.predictions)
  logits = out[mf.LOGITS]
  assert logits.shape == (2, 10, 7)
  softmax = np.exp(logits - logits.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  np.testing.assert_allclose(out[mf.PROBABILITIES], softmax.mean(axis=1), rtol=1e-5)


def test_eval_metrics_are_top1_top5_loss_and_per_class():
  with tf.Graph().as_default():
    spec = _spec(ModeKeys.EVAL, batch=8)
    scalars = {'top1_accuracy', 'top5_accuracy', 'cross_entropy'}
    assert set(spec.eval_metric_ops) == scalars | {mf.PER_CLASS_F1, mf.PER_CLASS_CONFUSION}
    updates = {k: spec.eval_metric_ops[k][1] for k in scalars}
    out = _run(dict(updates, probabilities=spec.predictions[mf.PROBABILITIES]))
  labels = np.arange(8) % 7
  probabilities = out['probabilities']
  assert out['top1_accuracy'] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
  top5 = np.argsort(-probabilities, axis=1)[:, :5]
  assert out['top5_accuracy'] == pytest.approx(np.mean([l in t for l, t in zip(labels, top5)]))
  expected_ce = -np.mean(np.log(probabilities[np.arange(8), labels]))
  assert out['cross_entropy'] == pytest.approx(expected_ce, rel=1e-4)


def test_loss_is_cross_entropy_plus_half_weight_decay_on_weights_only():
  with tf.Graph().as_default():
    spec = _spec(ModeKeys.EVAL, weight_decay=0.01)
    weights = [v for v in tf1.trainable_variables() if v.op.name.endswith('/weights')]
    biases = [v for v in tf1.trainable_variables() if v.op.name.endswith('/biases')]
    assert len(weights) == len(biases) == 2 * 7 + 1  # 5 conv + 2 fc per tower, plus fc8
    ce = tf1.get_default_graph().get_tensor_by_name('sparse_softmax_cross_entropy_loss/value:0')
    loss, ce_value, w_values = _run([spec.loss, ce, weights])
  decay = 0.01 / 2 * sum(float(np.sum(w.astype(np.float64) ** 2)) for w in w_values)
  assert loss == pytest.approx(ce_value + decay, rel=1e-5)


def test_train_step_is_momentum_sgd_with_the_given_learning_rate():
  with tf.Graph().as_default():
    tf1.set_random_seed(1)
    # Without dropout, so that the gradient run and the training run see the same network.
    spec = _spec(ModeKeys.TRAIN, lr=0.05, model=dataclasses.replace(MODEL, dropout_rate=0.0))
    graph = tf1.get_default_graph()
    var = [v for v in tf1.trainable_variables() if v.op.name == 'alexnet/classifier/fc8/biases'][0]
    grad = tf.gradients(spec.loss, var)[0]
    with tf1.Session(config=SOFT_PLACEMENT) as sess:
      sess.run(tf1.global_variables_initializer())
      before, g, lr = sess.run([var, grad, graph.get_tensor_by_name('learning_rate:0')])
      sess.run(spec.train_op)
      after, step = sess.run([var, tf1.train.get_global_step()])
  assert lr == pytest.approx(0.05) and step == 1
  # First momentum step from v = 0: w <- w - lr * grad (biases carry no weight decay).
  np.testing.assert_allclose(after, before - 0.05 * g, rtol=1e-4, atol=1e-7)


def test_label_smoothing_trains_on_soft_targets_and_evaluates_on_hard_ones():
  smoothing, batch = 0.1, 4
  with tf.Graph().as_default():
    tf1.set_random_seed(3)
    model = dataclasses.replace(MODEL, dropout_rate=0.0)
    spec = _spec(ModeKeys.TRAIN, batch=batch, weight_decay=0.0, model=model,
                 label_smoothing=smoothing)
    logits = tf1.get_default_graph().get_tensor_by_name('alexnet/fc8:0')
    loss, values = _run([spec.loss, logits])
  labels = np.arange(batch) % 7
  targets = np.full((batch, 7), smoothing / 7)
  targets[np.arange(batch), labels] += 1 - smoothing
  log_softmax = values - values.max(1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
  assert loss == pytest.approx(-np.mean(np.sum(targets * log_softmax, 1)), rel=1e-5)
  with tf.Graph().as_default():
    spec = _spec(ModeKeys.EVAL, label_smoothing=smoothing)
    names = {op.name for op in tf1.get_default_graph().get_operations()}
    assert 'sparse_softmax_cross_entropy_loss/value' in names  # the plain cross-entropy


@pytest.mark.parametrize('nesterov', [False, True])
def test_nesterov_is_the_optimizers_switch(nesterov):
  with tf.Graph().as_default() as graph:
    _spec(ModeKeys.TRAIN, nesterov=nesterov)
    applies = [op for op in graph.get_operations() if op.type == 'ResourceApplyMomentum']
  assert applies and all(op.get_attr('use_nesterov') == nesterov for op in applies)


def test_batch_normalization_replaces_lrn_and_updates_with_every_step():
  model = dataclasses.replace(MODEL, normalization=cfg.BATCH)
  with tf.Graph().as_default() as graph:
    tf1.set_random_seed(4)
    spec = _spec(ModeKeys.TRAIN, model=model)
    ops = {op.name for op in graph.get_operations()}
    assert 'alexnet/lrn1' not in ops and 'alexnet/conv1' in ops
    moving = [v for v in tf1.global_variables() if v.op.name.endswith('moving_mean')]
    assert len(moving) == 2 * 5  # after every conv of both towers
    decayed = [v.op.name for v in tf1.trainable_variables() if 'batch_norm' in v.op.name]
    assert decayed and not [n for n in decayed if mf._is_weight(  # gamma, beta: no decay
        next(v for v in tf1.trainable_variables() if v.op.name == n))]
    with tf1.Session(config=SOFT_PLACEMENT) as sess:
      sess.run(tf1.global_variables_initializer())
      before = sess.run(moving)
      sess.run(spec.train_op)
      after = sess.run(moving)
  assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))
  with tf.Graph().as_default() as graph:
    _spec(ModeKeys.EVAL, model=model)  # the moving statistics, nothing to update
    assert not tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)


def test_training_lowers_the_loss_on_a_fixed_batch():
  with tf.Graph().as_default():
    tf1.set_random_seed(2)
    # The paper's N(0, 0.01) learns this noise batch only slowly; a wider init shows the
    # optimiser working within a few steps.
    spec = _spec(ModeKeys.TRAIN, batch=8, lr=0.003,
                 model=dataclasses.replace(MODEL, dropout_rate=0.0, weight_stddev=0.03))
    with tf1.Session(config=SOFT_PLACEMENT) as sess:
      sess.run(tf1.global_variables_initializer())
      first = sess.run(spec.loss)
      for _ in range(30):
        sess.run(spec.train_op)
      last = sess.run(spec.loss)
  assert last < 0.7 * first


def test_class_names_must_match_the_number_of_classes():
  with pytest.raises(ValueError, match='3 class names for a 7-class model'):
    mf.make_model_fn(MODEL, cfg.TrainConfig(), None, ['a', 'b', 'c'])
