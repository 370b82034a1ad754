#!/usr/bin/env python
"""Imports Caffe's bvlc_alexnet weights as a run directory of alexnet_tf.

A thin wrapper: the flags and the work are in `alexnet_tf.weights`. Run with --help.
"""

import sys

from alexnet_tf.weights import cli

if __name__ == '__main__':
  sys.exit(cli.main())
