"""A 1-D CNN on MNIST-1D (offline, generated on first use by the `mnist1d` package).

  ./launch.sh --config=experiments/mnist1d_cnn.py --workdir=runs/mnist1d

Target: the paper's CNN figure, 94% test accuracy on the 1,000 test sequences. Measured: 98.3%
(the last checkpoint; 98.2% at the best by val accuracy; seed 0, trained on 90% of train, 66 s on
2 CPU cores).
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'mnist1d'
  config.data.augment.ops = ('shift',)
  config.data.augment.shift = 3
  config.model.name = 'simple_cnn'
  config.model.kwargs.widths = (32, 64, 128)
  config.model.kwargs.kernel_size = 5
  config.batch_size = 100
  config.num_epochs = 60
  config.optim.name = 'adamw'
  config.optim.lr = 3e-3
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'warmup_cosine'
  config.optim.warmup_epochs = 2
  config.log_every = 40
  config.eval_every = 400
  config.checkpoint.every = 400
  return config
