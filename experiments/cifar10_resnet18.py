"""ResNet-18 (CIFAR stem) on CIFAR-10 with the ResNet recipe: SGD momentum 0.9, lr 0.1 / 10 at epochs.

Prepare CIFAR-10 once (needs TensorFlow, from the [prepare] extra):
  pip install -e '.[prepare]' && tfds build cifar10 --file_format=array_record
  ./launch.sh --config=experiments/cifar10_resnet18.py --workdir=runs/cifar10

Expected: about 95% test accuracy after 200 epochs with crop + flip augmentation (one GPU: hours;
this 2-core CPU: not practical - use --config.num_steps for a smoke run).
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'cifar10'
  config.data.mean = (0.4914, 0.4822, 0.4465)
  config.data.std = (0.2470, 0.2435, 0.2616)
  config.data.augment.ops = ('random_crop', 'flip')
  config.data.augment.crop_padding = 4
  config.model.name = 'resnet18_cifar'
  config.batch_size = 256
  config.num_epochs = 200
  config.optim.lr = 0.1
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (100, 150)
  config.eval_every = 1000
  config.checkpoint.every = 1000
  return config
