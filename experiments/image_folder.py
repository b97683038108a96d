"""Your own images: ResNet-18 on a folder of class subfolders (docs/data.md, "Your own images").

  ./launch.sh --config=experiments/image_folder.py --config.data.folder=DIR --workdir=runs/mine

DIR holds train/CLASS/*.jpg (PNG and other formats too, RGB or grayscale) and optionally
val/CLASS/*; without val/, a seeded 10% of each class is held out for validation. The folder is
prepared once into array_record files under config.data.data_dir (no TensorFlow); later launches
read those. Training uses the ImageNet input recipe (inception crop + flip at 224, resize +
centre crop for evaluation), SGD with lr 0.1 per 256 examples, 1 warmup epoch, cosine decay.
For a small folder, start from pretrained weights rather than from scratch.

Expected: depends on your images; the run reports validation accuracy at each evaluation.
"""

from experiments import imagenet_resnet50


def get_config():
  config = imagenet_resnet50.get_config()
  config.data.name = 'image_folder'
  # The folder's own val/ (or a held-out share of each class) validates; test/ tests, if any.
  config.data.train_split, config.data.val_split, config.data.test_split = 'train', 'auto', 'auto'
  config.model.name = 'resnet18'
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 30
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 1.0
  config.log_every = 20
  config.eval_every = 200
  config.checkpoint.every = 200
  return config
