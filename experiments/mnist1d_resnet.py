"""A 1-D ResNet (three stages of two basic blocks, 32-64-128 channels) on MNIST-1D (offline).

  ./launch.sh --config=experiments/mnist1d_resnet.py --workdir=runs/mnist1d_resnet

Target: beat the paper's CNN (94%) and human (96%) test accuracy.
"""

from experiments import mnist1d_cnn


def get_config():
  config = mnist1d_cnn.get_config()
  config.model.name = 'resnet1d'
  config.model.kwargs = {}
  return config
