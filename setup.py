"""Installs `alexnet_tf` (pip name `alexnet-tf`).

TensorFlow is pinned to 2.15.x: it is the last release line with `tf.estimator`, and
tensorflow-addons 0.23 supports only TF 2.13-2.15. That pins Python to 3.9-3.11.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r"__version__ = '([^']+)'",
                    (HERE / 'alexnet_tf' / '__init__.py').read_text()).group(1)

setup(
    name='alexnet-tf',
    version=VERSION,
    description='Faithful AlexNet (NIPS 2012) for TensorFlow graph mode: two towers, '
                'Estimator training, TFRecord converters, TF Serving export.',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['alexnet_tf', 'alexnet_tf.*']),
    package_data={
        'alexnet_tf.kernels': ['*.cc'],  # compiled at first use (kernels/__init__)
        # The 1000 ILSVRC-2012 class names of imported Caffe weights (weights/importer.py).
        'alexnet_tf': ['data/*.txt'],
    },
    python_requires='>=3.9,<3.12',
    install_requires=[
        'tensorflow>=2.15,<2.16',
        # Per-class F1 and confusion counts in evaluation (model_fn.per_class_metrics); 0.23
        # is its last release and supports TF 2.13-2.15 only.
        'tensorflow-addons==0.23.*',
        'numpy<2',  # TF 2.15 is built against the NumPy 1.x ABI
        'pillow',  # image validation and re-encoding in the converter
        'tqdm',
    ],
    # scikit-image only for its bundled sample photographs, which the tests (and the
    # benchmarks, run from a checkout with this extra) turn into datasets; the package itself
    # never imports it, so users do not pay for it.
    extras_require={
        # matplotlib draws tools/plot_curve.py's learning curves; the tests check that tool.
        'plot': ['matplotlib'],
        'test': ['pytest', 'scikit-image', 'matplotlib'],
    },
    entry_points={
        'console_scripts': [
            'alexnet-make-tfrecords=alexnet_tf.convert.cli:main',
            'alexnet-train=alexnet_tf.train:main',
            'alexnet-evaluate=alexnet_tf.evaluate:main',
            'alexnet-export=alexnet_tf.export:main',
            'alexnet-predict=alexnet_tf.predict:main',
            'alexnet-import-weights=alexnet_tf.weights.cli:main',
        ],
    },
    classifiers=[
        'Programming Language :: Python :: 3.9',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
