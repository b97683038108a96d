"""Every field the training loop reads, with defaults; experiments import this and override.

Not an experiment by itself (it names no model or dataset worth running).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 128          # global, over all devices and hosts
  config.eval_batch_size = 256
  config.num_epochs = 10.0
  config.num_steps = 0             # > 0 overrides num_epochs
  config.grad_accum_steps = 1      # > 1: each step's batch in this many sequential parts
  config.log_every = 50
  config.eval_every = 500
  config.loss = 'softmax_cross_entropy'
  config.label_smoothing = 0.0
  config.ema_decay = 0.0           # > 0 keeps an EMA of the parameters and evaluates it
  config.aux_loss_weight = 0.3     # models with auxiliary heads (GoogLeNet): their loss weight
  config.compute_dtype = 'float32' # bfloat16 | float16: activations and convolutions in it;
                                   # parameters, optimizer, BatchNorm statistics and loss float32
  config.conv_impl = 'auto'        # xla | matmul (im2col, 1x1 as a product, depthwise as shifts)
                                   # | mixed (matmul, but XLA's convolution where YNNPACK takes it
                                   # and CPU-tuned backward passes);
                                   # auto: mixed on CPUs, xla on GPUs and TPUs
  config.tune_convolutions = True  # under mixed: time each convolution's ways once on this
                                   # machine, keep the fastest (~/.cache/cnn_jax/tuning.json);
                                   # on CPUs, the devices trained on too (docs/performance.md)
  config.resume = 'auto'           # auto: continue the workdir's run if compatible, else refuse
                                   # restart: archive the workdir's run, start afresh

  config.model = ml_collections.ConfigDict()
  config.model.name = 'simple_cnn'
  config.model.kwargs = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  config.data.name = 'digits'
  config.data.data_dir = '~/tensorflow_datasets'
  # Validation evaluates during training and picks the best checkpoint; test is evaluated once,
  # at the end, on the best and the last checkpoints (docs/training.md#splits).
  config.data.train_split = 'train'
  config.data.val_split = 'auto'   # auto: the dataset's 'validation', else the last
                                   # holdout_fraction of train_split (train keeps the rest)
  config.data.test_split = 'auto'  # auto: 'test' where the dataset has one; '': none
  config.data.folder = ''          # image_folder: DIR holding train/CLASS/*.jpg (val/ optional)
  config.data.holdout_fraction = 0.1  # the share of train that validates where the data has no
                                      # validation split (image_folder: per class)
  config.data.image_size = 224     # variable-size images and crops: the side of the square fed in
  config.data.crop_fraction = 0.875  # eval of variable-size images: resize to size / this, centre
  config.data.mean = (0.0,)
  config.data.std = (1.0,)
  config.data.workers = -1         # processes for per-example work; -1: one per core when needed
  config.data.num_threads = 2
  config.data.prefetch = 8
  config.data.batches_per_transfer = 1  # >1 for tiny batches whose transfer costs a step's share
  # Augmentations by name, in order (docs/data.md); their parameters are the other fields.
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.ops = ()
  config.data.augment.crop_padding = 0      # random_crop
  config.data.augment.rotate_degrees = 0.0  # affine
  config.data.augment.scale = (1.0, 1.0)    # affine
  config.data.augment.shift = 0             # shift (1-D sequences)
  config.data.augment.area_range = (0.08, 1.0)        # inception_crop
  config.data.augment.aspect_range = (3 / 4, 4 / 3)   # inception_crop
  config.data.augment.jitter = 0.4          # color_jitter
  config.data.augment.randaugment_n = 2     # randaugment
  config.data.augment.randaugment_m = 9     # randaugment, of 30
  config.data.augment.erasing_prob = 0.25   # random_erasing
  config.data.augment.mixup_alpha = 0.2     # mixup
  config.data.augment.cutmix_alpha = 1.0    # cutmix

  config.optim = ml_collections.ConfigDict()
  config.optim.name = 'sgd'        # sgd | adam | adamw | rmsprop | lars
  config.optim.lr = 0.1            # the peak; per lr_base_batch examples when lr_scaling is set
  config.optim.lr_scaling = 'none' # none | linear | sqrt: lr * (batch_size / lr_base_batch)^(1|0.5)
  config.optim.lr_base_batch = 256
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.weight_decay = 0.0  # L2 on kernels (decoupled for adamw); biases/norms excluded
  config.optim.schedule = 'cosine' # constant | step | cosine | warmup_cosine | plateau
  config.optim.decay_epochs = (30, 60, 90)
  config.optim.decay_factor = 0.1
  config.optim.warmup_epochs = 0.0 # > 0: a linear ramp from 0 before any schedule
  config.optim.plateau_metric = 'accuracy'
  config.optim.plateau_mode = 'max'
  config.optim.plateau_patience = 2
  config.optim.clip_norm = 0.0
  config.optim.trust_coefficient = 0.001  # lars
  config.optim.max_norm = 0.0      # > 0 projects every filter onto this L2 norm after each step
  config.optim.trainable = ''      # a regex on parameter paths: only those train (others frozen)
  config.optim.layer_decay = 1.0   # < 1: layer l of L learns at lr * layer_decay^(L-1-l)

  # Where a fresh run's weights come from (never applied again on resume): docs/pretrained.md.
  config.init = ml_collections.ConfigDict()
  config.init['from'] = ''         # a weights file (.pth / .safetensors) or RUN_DIR[:best|:latest|:STEP]
  config.init.head_only = False    # a linear probe: only the classifier trains, BatchNorm frozen

  config.parallel = ml_collections.ConfigDict()
  config.parallel.mode = 'jit'     # jit (global program) | pmap (per-device, shard_map)

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every = 500
  config.checkpoint.keep = 2
  config.checkpoint.best_metric = 'accuracy'
  config.checkpoint.best_mode = 'max'
  return config
