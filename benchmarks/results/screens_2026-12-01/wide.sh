#!/bin/bash
# equal-time width trade: conv3-5 1.5x wide, 8 epochs (the default: 13 epochs), seed 1
source /work/venv/bin/activate; export PYTHONPATH=/work/wt/scr; cd /work/wt/scr
while pgrep -f screens.sh >/dev/null; do sleep 3; done
echo "wide start $(date +%T)"; t0=$(date +%s)
python -m alexnet_tf.train --dataset cifar10 --data-dir /work/data/cifar10 --model-dir /work/scr/wide_conv8 --no-export --seed 1 --epochs 8 --ablation wide_conv > /work/scr/wide_conv8.log 2>&1
echo "wide trained $(date +%T) rc=$? seconds=$(( $(date +%s) - t0 ))"
python -m alexnet_tf.evaluate --model-dir /work/scr/wide_conv8 --checkpoint latest --output /work/scr/wide_conv8/eval_final.json > /work/scr/wide_conv8-eval.log 2>&1
echo "wide done $(date +%T) seconds=$(( $(date +%s) - t0 ))"
