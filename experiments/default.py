"""The default experiment: a small CNN on scikit-learn's 8x8 digits (offline, prepared on first use).

  ./launch.sh                                     # this config into runs/default-<time>
  ./launch.sh --config=experiments/default.py --workdir=runs/digits

Expected: >= 98% test accuracy on the 400 test digits, at the final step (760) and at the best
checkpoint by accuracy on the 140 held-out validation digits (98.75% with seeds 0 and 1; bfloat16:
98.50%), in about 20 seconds on a 2-core CPU.
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'digits'
  config.data.mean, config.data.std = (0.3,), (0.35,)
  config.data.augment.ops = ('random_crop',)
  config.data.augment.crop_padding = 1  # on 8x8 digits, rotations and rescaling hurt (97.0-98.0%)
  config.model.name = 'simple_cnn'
  config.model.kwargs.widths = (32, 64)
  config.batch_size = 64
  config.num_epochs = 40
  config.optim.lr = 0.05
  config.optim.weight_decay = 5e-4
  config.log_every = 20
  config.eval_every = 200
  config.checkpoint.every = 200
  return config
