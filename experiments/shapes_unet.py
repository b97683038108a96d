"""U-Net on the offline shapes segmentation task (64x64 scenes, 4 classes per pixel).

  ./launch.sh --config=experiments/shapes_unet.py --workdir=runs/shapes_unet

Target: >= 0.9 test mean IoU (over background, circle, square, triangle). Measured: 0.910 mean
IoU, 98.7% pixel accuracy at the last checkpoint, also the best by val mean IoU (seed 0, trained
on 90% of train, 1,344 steps, 22 min on 2 CPU cores shared with tests).
Add or remove a resolution level with --config.model.kwargs.levels=5 (or 3).
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'shapes'
  config.data.mean = (0.5, 0.5, 0.5)
  config.data.std = (0.25, 0.25, 0.25)
  config.data.augment.ops = ('flip',)
  config.loss = 'pixel_cross_entropy'
  config.model.name = 'unet'
  config.model.kwargs.levels = 4
  config.model.kwargs.width = 16
  config.batch_size = 32
  config.eval_batch_size = 100
  config.num_epochs = 12
  config.optim.name = 'adamw'
  config.optim.lr = 3e-3
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'warmup_cosine'
  config.optim.warmup_epochs = 0.5
  config.log_every = 25
  config.eval_every = 500
  config.checkpoint.every = 500
  config.checkpoint.best_metric = 'mean_iou'
  return config
