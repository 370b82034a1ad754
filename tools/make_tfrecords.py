#!/usr/bin/env python
"""Converts CIFAR-10, ILSVRC-2012 or a class-folder tree into sharded TFRecords.

A thin wrapper: the flags and the work are in `alexnet_tf.convert.cli`. Run with --help.
"""

import sys

if __name__ == '__main__':
  # Imported here, not at the top: the converter's worker processes re-import this file.
  from alexnet_tf.convert import cli
  sys.exit(cli.main())
