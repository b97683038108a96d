"""ResNet-50 on ImageNet (TFDS 'imagenet2012'), the paper's recipe (He et al., 2016).

SGD momentum 0.9, lr 0.1 for batch 256 divided by 10 at epochs 30 and 60 (the paper divides on
plateau; set --config.optim.schedule=plateau for that), weight decay 1e-4, no dropout, 90 epochs.
Prepare ImageNet once (manual download; needs TensorFlow, from the [prepare] extra):
  pip install -e '.[prepare]' && tfds build imagenet2012 --manual_dir=DIR --file_format=array_record
  ./launch.sh --config=experiments/imagenet_resnet50.py --workdir=runs/imagenet

Expected: about 76% top-1 (75.3% in the paper with 10-crop testing; single centre crop here).
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'imagenet2012'
  config.data.eval_split = 'validation'
  config.data.image_size = 224
  config.data.mean = (0.485, 0.456, 0.406)
  config.data.std = (0.229, 0.224, 0.225)
  config.data.augment.crop_padding = 16
  config.data.augment.flip = True
  config.model.name = 'resnet50'
  config.batch_size = 256
  config.eval_batch_size = 256
  config.num_epochs = 90
  config.optim.lr = 0.1
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (30, 60)
  config.log_every = 100
  config.eval_every = 5000
  config.checkpoint.every = 5000
  return config
