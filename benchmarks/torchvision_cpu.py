"""``import torchvision`` on the CPU build of torch.

The registry's torchvision wheels are CUDA builds: their C++ extension (``_C``: detection ops
and video) does not load against a CPU torch, and torchvision's import then fails registering fake
kernels for ``torchvision::nms`` and ``qnms`` (its unguarded registrations). Models and
transforms need none of the extension's ops, so where it cannot load, those ops' schemas are
declared first and the import goes through; calling the ops themselves still fails."""

import importlib.util
import os

import torch

UNGUARDED_OPS = ('nms', 'qnms')
_SHIM = None  # the declared schemas live as long as this library object


def load():
  """The torchvision module, importable whether or not its extension loads here."""
  global _SHIM
  if _SHIM is None:
    spec = importlib.util.find_spec('torchvision')
    if spec is None:
      raise ImportError('torchvision is not installed: ./launch.sh test installs it (the [dev] extra).')
    extension = [name for name in os.listdir(spec.submodule_search_locations[0])
                 if name.startswith('_C.') and name.endswith('.so')]
    try:
      for name in extension:
        torch.ops.load_library(os.path.join(spec.submodule_search_locations[0], name))
      _SHIM = False
    except OSError:
      _SHIM = torch.library.Library('torchvision', 'FRAGMENT')  # pylint: disable=protected-access
      for op in UNGUARDED_OPS:
        _SHIM.define(f'{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision
