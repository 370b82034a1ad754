"""Average the last N checkpoints of a run into RUN/avgN/model.ckpt-STEP, STEP the last one's
(screen only; run.json and train_mean.npy are copied beside it for `alexnet_tf.evaluate`)."""
import sys, os, shutil, numpy as np, tensorflow as tf
tf1 = tf.compat.v1
run, n = sys.argv[1], int(sys.argv[2])
ckpts = sorted({f.split('.')[1] for f in os.listdir(run) if f.startswith('model.ckpt-') and f.endswith('.index')}, key=lambda s: int(s.split('-')[1]))[-n:]
readers = [tf.train.load_checkpoint(os.path.join(run, 'model.' + c)) for c in ckpts]
names = readers[-1].get_variable_to_shape_map()
out = os.path.join(run, f'avg{n}'); os.makedirs(out, exist_ok=True)
for f in ['run.json', 'train_mean.npy']: shutil.copy(os.path.join(run, f), out)
g = tf.Graph()
with g.as_default():
  vs = []
  for name in names:
    vals = [r.get_tensor(name) for r in readers]
    v = vals[-1] if vals[-1].dtype.kind not in 'f' else np.mean(vals, axis=0).astype(vals[-1].dtype)
    vs.append(tf1.Variable(v, name=name))
  s = tf1.train.Saver(vs)
  with tf1.Session() as sess:
    sess.run(tf1.global_variables_initializer())
    print(s.save(sess, os.path.join(out, 'model.ckpt'), global_step=int(ckpts[-1].split('-')[1])))
print(ckpts)
