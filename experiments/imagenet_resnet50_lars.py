"""ResNet-50 on ImageNet with a pod-size batch: LARS in the form of the MLPerf large-batch recipes.

Batch 4096 (e.g. 8 hosts x 8 GPUs x 64, or a TPU pod slice), LARS (trust coefficient 0.001,
momentum 0.9, weight decay 5e-5 on kernels only), a peak lr of 9.0 at batch 4096 (0.5625 per
256, scaled linearly: another batch size keeps the rule), 3 warmup epochs then cosine decay,
label smoothing 0.1, 40 epochs, bfloat16; the inception-crop + flip input of
`imagenet_resnet50`. Where the global batch does not fit the devices' memory, set
--config.grad_accum_steps=K (each step in K sequential parts, the same update).
  ./launch.sh --config=experiments/imagenet_resnet50_lars.py --workdir=runs/imagenet-lars

Expected: a starting point for pods, not a reproduced result; MLPerf's LARS submissions reach
75.9% top-1 in about 35-40 epochs with hyperparameters of this form tuned to their batch.
"""

from experiments import imagenet_resnet50


def get_config():
  config = imagenet_resnet50.get_config()
  config.batch_size = 4096
  config.eval_batch_size = 4096
  config.num_epochs = 40
  config.compute_dtype = 'bfloat16'
  config.label_smoothing = 0.1
  config.optim.name = 'lars'
  config.optim.lr = 9.0 * 256 / 4096
  config.optim.lr_scaling = 'linear'
  config.optim.weight_decay = 5e-5
  config.optim.trust_coefficient = 0.001
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 3.0
  config.log_every = 50
  config.eval_every = 1250
  config.checkpoint.every = 1250
  return config
