"""`load_pretrained(name, path)`: a pretrained network (torchvision's weights file) opened for
analysis like a run, taking raw images.

    net = analysis.load_pretrained('resnet50', 'resnet50-0676ba61.pth')
    x = net.preprocess(photos)                  # uint8 [H, W, 3] images of any size, or files
    logits = net.apply(x)
    maps = analysis.grad_cam(net.model, net.variables, x, target=None)
"""

import dataclasses

import flax.linen as nn
import numpy as np

from cnn_jax.analysis.run import Applies
from cnn_jax.data import images as images_lib
from cnn_jax.data import pipeline
from cnn_jax.models import pretrained, registry


@dataclasses.dataclass
class Pretrained(Applies):
  """A pretrained network: ``model`` and ``variables`` for every analysis method, ``apply`` (eval
  mode, on batches made by ``preprocess``) as in `Run`, and ``preprocess`` for raw images.

  Attributes:
    name: the zoo (and torchvision) name.
    path: the weights file.
    model: the model in eval form.
    variables: ``{'params', 'batch_stats'?}``.
    preprocessing: the weights' resize, crop and normalisation.
  """
  name: str
  path: str
  model: nn.Module
  variables: dict
  preprocessing: registry.Preprocessing

  def preprocess(self, images) -> np.ndarray:
    """[N, crop, crop, 3] float32 inputs from raw RGB images: uint8 [H, W, 3] arrays of any size
    (or a batch of them), or encoded JPEG / PNG bytes. The shorter side is resized to the
    weights' ``resize`` (bilinear; area averaging when shrinking more than 2x), the centre
    ``crop`` square taken, and the result normalised by their mean and std."""
    p = self.preprocessing
    crops = [images_lib.center_crop(image, p.crop, p.crop / p.resize, 3) for image in images]
    return pipeline.normalize(np.stack(crops), p)

  def classes(self, logits, k: int = 5) -> np.ndarray:
    """The indices of the ``k`` highest logits per example, best first."""
    return np.argsort(-np.asarray(logits), axis=-1)[:, :k]


def load_pretrained(name: str, path: str, num_classes: int | None = None) -> Pretrained:
  """Zoo model ``name`` with torchvision's weights in ``path`` (see docs/pretrained.md)."""
  model, variables = pretrained.load_pretrained(name, path, num_classes)
  preprocessing = registry.entry(name).torchvision.preprocessing(path)
  return Pretrained(name, path, model, variables, preprocessing)
