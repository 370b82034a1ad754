#!/bin/bash
# 4-epoch screens of free knobs on the default recipe, seed 1, after the table rows finish
source /work/venv/bin/activate; export PYTHONPATH=/work/wt/scr; cd /work/wt/scr
while pgrep -f s9.sh >/dev/null; do sleep 5; done
run() { name=$1; shift
  echo "$name start $(date +%T)"
  python -m alexnet_tf.train --dataset cifar10 --data-dir /work/data/cifar10 --model-dir /work/scr/$name --no-export --seed 1 --epochs 4 "$@" > /work/scr/$name.log 2>&1
  echo "$name done $(date +%T) rc=$?"; }
run base
ALEXNET_WHITEN=/work/scr/whiten_eps100.npy ALEXNET_WHITEN_SCALE=1.66 run zca100 --ablation zca
run he_fc --ablation he_fc
for n in 2 3; do
  python /work/scr/avg.py /work/r16/wide_fc-seed1 $n > /work/scr/avg$n.log 2>&1
  python -m alexnet_tf.evaluate --model-dir /work/r16/wide_fc-seed1/avg$n --checkpoint latest --output /work/scr/avg$n.json >> /work/scr/avg$n.log 2>&1
  echo "avg$n done $(date +%T)"
done
run lr04 --learning-rate 0.04
run wd1e3 --ablation wd_1e3
