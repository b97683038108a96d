"""LeNet-5 on MNIST (TFDS 'mnist'), the classic recipe: tanh, average pooling, SGD.

Prepare MNIST once (needs TensorFlow, from the [prepare] extra):
  pip install -e '.[prepare]' && tfds build mnist --file_format=array_record
  ./launch.sh --config=experiments/mnist_lenet5.py --workdir=runs/lenet5

Expected: about 99% test accuracy after 20 epochs (LeCun et al. report 0.95% error).
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'mnist'
  config.data.mean, config.data.std = (0.1307,), (0.3081,)
  config.model.name = 'lenet5'
  config.model.kwargs.input_padding = 2  # 28x28 -> the 32x32 LeNet-5 was designed for
  config.batch_size = 128
  config.num_epochs = 20
  config.optim.lr = 0.05
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (10, 15)
  config.eval_every = 1000
  config.checkpoint.every = 1000
  return config
