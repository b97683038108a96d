"""The dilated-convolution context network (no pooling) on the offline shapes segmentation task.

  ./launch.sh --config=experiments/shapes_dilated.py --workdir=runs/shapes_dilated
"""

from experiments import shapes_unet


def get_config():
  config = shapes_unet.get_config()
  config.model.name = 'dilated_context'
  config.model.kwargs = {'width': 16}
  return config
