"""PyTorch twins of the benchmark models: the same layers, the same parameter count (checked by
the benchmark), trained by the same step (softmax cross-entropy, SGD with momentum 0.9)."""

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
  return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
          nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5), nn.ReLU(inplace=True)]


class BasicBlock(nn.Module):

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.body = nn.Sequential(*_conv_bn_relu(cin, cout, 3, stride),
                              nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
    self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    return torch.relu(self.body(x) + self.shortcut(x))


def resnet18_cifar(num_classes: int) -> nn.Module:
  layers, cin = _conv_bn_relu(3, 64, 3), 64
  for stage, width in enumerate((64, 128, 256, 512)):
    for block in range(2):
      layers.append(BasicBlock(cin, width, 2 if stage and not block else 1))
      cin = width
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(512, num_classes))


def mobilenet_v1(num_classes: int, width_multiplier: float) -> nn.Module:
  width = lambda c: max(1, int(c * width_multiplier))
  blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5,
            (1024, 2), (1024, 1))
  layers, cin = _conv_bn_relu(3, width(32), 3, 2), width(32)
  for features, stride in blocks:
    layers += _conv_bn_relu(cin, cin, 3, stride, groups=cin) + _conv_bn_relu(cin, width(features), 1)
    cin = width(features)
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(1e-3),
                       nn.Linear(cin, num_classes))


def lenet5(num_classes: int) -> nn.Module:
  return nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
                       nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
                       nn.Conv2d(16, 120, 5), nn.Flatten(), nn.Tanh(),
                       nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, num_classes))


def resnet50(num_classes: int) -> nn.Module:
  import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision.models.resnet50(num_classes=num_classes)


TWINS = {'resnet18_cifar': lambda num_classes, **_: resnet18_cifar(num_classes),
         'mobilenet_v1': lambda num_classes, width_multiplier=1.0: mobilenet_v1(
             num_classes, width_multiplier),
         'lenet5': lambda num_classes, **_: lenet5(num_classes),
         'resnet50': lambda num_classes, **_: resnet50(num_classes)}


def parameter_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
