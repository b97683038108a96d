"""ResNet-50 on ImageNet (TFDS 'imagenet2012'), torchvision's recipe for its v1 weights.

Training: RandomResizedCrop (inception crop: 8-100% of the area, aspect 3/4-4/3) to 224 and a
horizontal flip; SGD momentum 0.9, lr 0.1 per 256 examples (scaled linearly with the global
batch), divided by 10 at epochs 30 and 60, weight decay 1e-4, 90 epochs, batch 256.
Evaluation: shorter side resized to 256 (224 / 0.875), centre 224 crop.
Prepare ImageNet once (manual download; needs TensorFlow, from the [prepare] extra; docs/data.md):
  .venv/bin/pip install -e '.[prepare]'
  .venv/bin/tfds build imagenet2012 --manual_dir=DIR --file_format=array_record
  ./launch.sh --config=experiments/imagenet_resnet50.py --workdir=runs/imagenet
On GPUs add --config.compute_dtype=bfloat16.

Expected: 76.1% top-1 on ImageNet's validation split (reported here as the test accuracy of the
last checkpoint), the figure torchvision publishes for the weights this recipe trained (ResNet-50
v1.5, IMAGENET1K_V1, trained on all of train); stated, not measured here.
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'imagenet2012'
  # ImageNet's test labels are not public: its validation split is the test set everyone
  # reports, so 1% of train (12,812 images, a "minival") validates and picks the best checkpoint.
  config.data.train_split = 'train[:99%]'
  config.data.val_split = 'train[99%:]'
  config.data.test_split = 'validation'
  config.data.image_size = 224
  config.data.crop_fraction = 0.875
  config.data.mean = (0.485, 0.456, 0.406)
  config.data.std = (0.229, 0.224, 0.225)
  config.data.augment.ops = ('inception_crop', 'flip')
  config.model.name = 'resnet50'
  config.batch_size = 256
  config.eval_batch_size = 256
  config.num_epochs = 90
  config.optim.lr = 0.1
  config.optim.lr_scaling = 'linear'
  config.optim.lr_base_batch = 256
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (30, 60)
  config.log_every = 100
  config.eval_every = 5000
  config.checkpoint.every = 5000
  return config
