"""Your own images from an ImageNet-pretrained ResNet-50 (docs/pretrained.md).

  curl -LO https://download.pytorch.org/models/resnet50-0676ba61.pth
  ./launch.sh --config=experiments/finetune_folder.py --config.data.folder=DIR \
      --config.init.from=resnet50-0676ba61.pth --workdir=runs/finetune

DIR is laid out as for experiments/image_folder.py (train/CLASS/*.jpg, optionally val/CLASS/*).
Every layer is fine-tuned from torchvision's weights with a tenth of the from-scratch learning
rate; the classifier starts afresh for your classes. A linear probe instead (only the classifier
trains, on frozen features and BatchNorm statistics): add --config.init.head_only=true and
--config.optim.lr=0.1. The input recipe is the weights' own: their mean and std, and evaluation
resizing to 256 before the centre 224 crop.

Expected: depends on your images; a pretrained start typically needs far fewer images and epochs
than training from scratch (experiments/image_folder.py).
"""

from cnn_jax import models
from experiments import image_folder

WEIGHTS = 'resnet50-0676ba61.pth'


def get_config():
  config = image_folder.get_config()
  config.model.name = 'resnet50'
  config.init['from'] = WEIGHTS
  preprocessing = models.entry('resnet50').torchvision.preprocessing(WEIGHTS)
  config.data.mean, config.data.std = preprocessing.mean, preprocessing.std
  config.data.image_size = preprocessing.crop
  config.data.crop_fraction = preprocessing.crop / preprocessing.resize
  config.num_epochs = 10
  config.optim.lr = 0.01  # per 256 examples
  config.optim.warmup_epochs = 0.0
  config.optim.weight_decay = 1e-4
  return config
