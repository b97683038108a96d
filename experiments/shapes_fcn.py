"""FCN-8s (VGG-16 layout, 1/8 width) on the offline shapes segmentation task.

  ./launch.sh --config=experiments/shapes_fcn.py --workdir=runs/shapes_fcn

FCN-32s and -16s: --config.model.name=fcn32s (or fcn16s).

Measured: 0.739 test mean IoU, 95.6% pixel accuracy at the last checkpoint, also the best by val
mean IoU (seed 0, trained on 90% of train, 4.5 min on 2 CPU cores): the coarse x8 upsampling
blurs the boundaries U-Net keeps.
"""

from experiments import shapes_unet


def get_config():
  config = shapes_unet.get_config()
  config.model.name = 'fcn8s'
  config.model.kwargs = {'width': 8, 'dense_features': 128, 'batch_norm': True, 'dropout': 0.1}
  return config
