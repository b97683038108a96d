"""Architectures, registered by name: ``get_model(name, num_classes=..., **overrides)``.

Every entry also records its native input (one example's shape), ``input_shape(name)``.

Each architecture registers itself in its own file (`cnn_jax.models.registry`). Your own model:
`register_model` it (a decorator), or name it by import path (``'my_pkg.nets:MyNet'``) or by file
(``'path/to/nets.py:MyNet'``) wherever a registered name is accepted. The contract every model
meets is `cnn_jax.models.contract`'s; the command line's typed fields, `cnn_jax.models.overrides`.
"""

# Each model file registers its architectures on import.
from cnn_jax.models import (alexnet, context, convnext, deepbind, densenet, efficientnet, fcn,  # noqa: F401
                            googlenet, lenet, mobilenet, regnet, resnet, segnet, simple, unet, vgg,
                            wavenet)
from cnn_jax.models.contract import check_contract
from cnn_jax.models.overrides import FieldInfo, describe, fields, resolve_kwargs
from cnn_jax.models.pretrained import load_pretrained
from cnn_jax.models.registry import (Preprocessing, Torchvision, Weights, entry, family, get_model,
                                     input_shape, list_models, register_model)
