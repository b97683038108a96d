"""A WaveNet-style causal dilated stack on MNIST-1D (offline), classifying from the last step.

  ./launch.sh --config=experiments/mnist1d_wavenet.py --workdir=runs/mnist1d_wavenet

Target: beat the paper's CNN (94%) on the 1,000 test sequences.
"""

from experiments import mnist1d_cnn


def get_config():
  config = mnist1d_cnn.get_config()
  config.model.name = 'wavenet'
  config.model.kwargs = {'channels': 32, 'skip_channels': 64, 'dilations': (1, 2, 4, 8, 16, 32)}
  return config
