"""A WaveNet-style stack of gated causal dilated convolutions on MNIST-1D (offline).

  ./launch.sh --config=experiments/mnist1d_wavenet.py --workdir=runs/mnist1d_wavenet

Kernel 3, dilations 1..16 (a 65-step receptive field over the 40-step sequences), max over time.
Measured: 97.8% test accuracy at the last checkpoint (seed 0, trained on 90% of train, 71 s on
2 CPU cores); the paper's CNN gets 94%, humans 96%. With WaveNet's own kernel 2 and the last
step's features: 93.4% (trained on all of train).
"""

from experiments import mnist1d_cnn


def get_config():
  config = mnist1d_cnn.get_config()
  config.model.name = 'wavenet'
  config.model.kwargs = {'channels': 32, 'skip_channels': 64, 'kernel_size': 3,
                         'dilations': (1, 2, 4, 8, 16), 'pooling': 'max'}
  return config
