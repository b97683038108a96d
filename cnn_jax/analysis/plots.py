"""Figures for the analysis methods (matplotlib). Each returns its figure and takes ``save=PATH``.

Images are channels last ([*S, C]); single-channel images are drawn in grey, three-channel ones
in colour, each rescaled to its own range (what normalisation did to the data is undone visually).
"""

import math
from collections.abc import Sequence

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches as mpatches
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D

BASE_COLOURS = {'A': '#109648', 'C': '#255C99', 'G': '#F7B32B', 'T': '#D62839', 'U': '#D62839'}


def _finish(fig, save: str | None):
  fig.tight_layout()
  if save:
    fig.savefig(save, dpi=110, bbox_inches='tight')
  return fig


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
  """An image for imshow: [H, W] grey or [H, W, 3] colour scaled to [0, 1]; a 1-D signal [L, C]
  as C rows."""
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image.T
  elif image.shape[-1] == 1:
    image = image[..., 0]
  elif image.shape[-1] != 3:
    image = image.mean(-1)
  lo, hi = float(image.min()), float(image.max())
  image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
  return image, ('gray' if image.ndim == 2 else None)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
               columns: int = 8, size: float = 1.4, title: str | None = None,
               save: str | None = None):
  """Images side by side, ``columns`` to a row."""
  count = len(images)
  rows = math.ceil(count / columns)
  columns = min(columns, count)
  fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.4 * bool(title)),
                           squeeze=False)
  for index, ax in enumerate(axes.flat):
    ax.axis('off')
    if index < count:
      image, cmap = _displayable(images[index])
      ax.imshow(image, cmap=cmap, interpolation='nearest')
      if titles is not None:
        ax.set_title(titles[index], fontsize=8)
  if title:
    fig.suptitle(title)
  return _finish(fig, save)


def filter_grid(kernels: np.ndarray, columns: int = 8, save: str | None = None):
  """The filters of one layer ([out, *kernel, in], as `filters` returns): RGB for 3 input
  channels, grey for 1, the mean over inputs otherwise; a 1-D filter as [in, width] rows."""
  kernels = np.asarray(kernels)
  return image_grid(list(kernels), [f'{i}' for i in range(len(kernels))], columns,
                    title=f'{len(kernels)} filters, {"x".join(map(str, kernels.shape[1:-1]))} x '
                    f'{kernels.shape[-1]}', save=save)


def feature_map_grid(activation: np.ndarray, columns: int = 8, limit: int = 32,
                     title: str | None = None, save: str | None = None):
  """The first ``limit`` channels of one example's activation [*S, C], one map per channel."""
  activation = np.asarray(activation)
  maps = [activation[..., c:c + 1] for c in range(min(limit, activation.shape[-1]))]
  return image_grid(maps, [f'{c}' for c in range(len(maps))], columns, title=title, save=save)


def curves(histories: dict, names: Sequence[str] | None = None, save: str | None = None):
  """Training curves, one panel per metric: the train line and the val points of one
  `Run.history()`, or of several runs to compare, given as ``{label: run.history()}`` (one colour
  per run, named in the legend)."""
  if {'train', 'val'} & set(histories):
    histories = {'': histories}
  names = names or [n for n in ('loss', 'accuracy', 'mean_iou', 'learning_rate')
                    if any(n in h.get(split, {}) for h in histories.values()
                           for split in ('train', 'val'))]
  fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
  for ax, name in zip(axes.flat, names):
    for index, (label, history) in enumerate(histories.items()):
      colour = f'C{index}'
      prefix = f'{label} ' if label else ''
      if name in history.get('train', {}):
        ax.plot(*history['train'][name], color=colour, lw=1, alpha=0.8, label=f'{prefix}train')
      if name in history.get('val', {}):
        ax.plot(*history['val'][name], 'o--', color=colour, ms=4, label=f'{prefix}val')
    ax.set_xlabel('step')
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return _finish(fig, save)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     class_names: Sequence[str] | None = None, save: str | None = None):
  """Counts of (true, predicted) pairs; the diagonal is what the model got right."""
  labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
  classes = int(max(labels.max(), predictions.max())) + 1
  matrix = np.zeros((classes, classes), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  names = class_names or [str(c) for c in range(classes)]
  fig, ax = plt.subplots(figsize=(0.5 * classes + 2, 0.5 * classes + 1.5))
  ax.imshow(matrix, cmap='Blues')
  for (i, j), count in np.ndenumerate(matrix):
    if count:
      ax.text(j, i, count, ha='center', va='center', fontsize=7,
              color='white' if count > matrix.max() / 2 else 'black')
  ax.set_xticks(range(classes), names, fontsize=8)
  ax.set_yticks(range(classes), names, fontsize=8)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'accuracy {np.trace(matrix) / max(matrix.sum(), 1):.2%} of {matrix.sum():,}')
  return _finish(fig, save)


def _heat(attribution: np.ndarray) -> np.ndarray:
  """One value per pixel: the largest magnitude over channels."""
  attribution = np.asarray(attribution, np.float32)
  return np.abs(attribution).max(-1) if attribution.ndim == 3 else attribution


SCALES = ('panel', 'method', 'shared')


def _occlusion_extent(counts: tuple, patch, stride) -> tuple:
  """imshow's extent that puts each occlusion cell at the centre of its patch (a cell spans one
  stride), in the pixel coordinates of an image drawn with its default extent."""
  patch, stride = (np.broadcast_to(v, (2,)) for v in (patch, stride))
  first = (patch - 1) / 2 - stride / 2
  last = first + np.asarray(counts) * stride
  return (first[1], last[1], last[0], first[0])


def attribution_overlays(images: np.ndarray, maps: dict[str, np.ndarray],
                         titles: Sequence[str] | None = None, scale: str = 'panel',
                         occlusion: tuple | None = None, save: str | None = None):
  """One row per example: the image, then each method's map over it, each with its colour bar.

  ``maps`` holds arrays with one entry per example: attributions shaped like the images (drawn
  as the largest magnitude over channels), or coarser maps: Grad-CAM is stretched over the image;
  maps named ``occlusion...`` are probabilities (low, dark: hiding that patch hurts) drawn one
  cell per patch at the patch's centre, given the ``occlusion=(patch, stride)`` they were made
  with. ``scale``: 'panel' gives each panel its own colour range; 'method' one range per method
  over the examples; 'shared' one range for every gradient-based map and one for the occlusion
  maps (probabilities), so methods compare on one scale. Ranges are the 0.5-99.5 percentiles
  (gradients are heavy-tailed: a few extreme pixels would leave the rest of the map black).
  """
  if scale not in SCALES:
    raise ValueError(f'scale={scale!r}: expected one of {SCALES}.')
  images = np.asarray(images)
  occluded = [name for name in maps if name.startswith('occlusion')]
  if occluded and occlusion is None:
    raise ValueError(f'{occluded} need occlusion=(patch, stride), as given to analysis.occlusion, '
                     'to be drawn where their patches were.')
  heats = {name: [_heat(v) if np.ndim(v) == images.ndim - 1 else np.asarray(v, np.float32)
                  for v in values] for name, values in maps.items()}

  def limits(arrays) -> tuple[float, float]:
    low, high = np.percentile(np.concatenate([a.ravel() for a in arrays]), [0.5, 99.5])
    return float(low), float(max(high, low + 1e-12))

  group = {name: 'occlusion' if name in occluded else 'gradient' for name in maps}
  shared = {g: limits([h for n, hs in heats.items() if group[n] == g for h in hs])
            for g in set(group.values())}
  fig, axes = plt.subplots(len(images), 1 + len(maps),
                           figsize=(2.3 * (1 + len(maps)), 1.9 * len(images)), squeeze=False)
  height, width = images.shape[1:3]
  extent = (-0.5, width - 0.5, height - 0.5, -0.5)
  for row, image in enumerate(images):
    shown, cmap = _displayable(image)
    axes[row, 0].imshow(shown, cmap=cmap, interpolation='nearest')
    axes[row, 0].set_title(titles[row] if titles else 'input', fontsize=8)
    for column, name in enumerate(maps, start=1):
      ax, heat = axes[row, column], heats[name][row]
      low, high = {'panel': lambda: limits([heat]), 'method': lambda: limits(heats[name]),
                   'shared': lambda: shared[group[name]]}[scale]()
      ax.imshow(shown, cmap=cmap, interpolation='nearest')
      placed = (_occlusion_extent(heat.shape, *occlusion) if name in occluded else extent)
      drawn = ax.imshow(heat, cmap='viridis' if name in occluded else 'inferno', alpha=0.65,
                        extent=placed, vmin=low, vmax=high,
                        interpolation='nearest' if name in occluded else 'bilinear')
      ax.set_xlim(extent[:2])
      ax.set_ylim(extent[2:])
      bar = fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.03)
      bar.ax.tick_params(labelsize=6)
      if row == 0:
        ax.set_title(name, fontsize=8)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0, 0].axis('off')
  for ax in axes[1:, 0]:
    ax.axis('off')
  return _finish(fig, save)


def label_maps(maps: dict[str, np.ndarray], class_names: Sequence[str], images=None,
               columns: int | None = None, size: float = 2.0, save: str | None = None):
  """Per-pixel class maps ([N, H, W] integers: labels, predictions) side by side, one row per
  example: one fixed colour per class in every panel, named in the legend. ``images`` ([N, H, W,
  C]) adds each example's image as the first column."""
  panels = ({'image': np.asarray(images)} if images is not None else {}) | {
      k: np.asarray(v) for k, v in maps.items()}
  count = len(next(iter(panels.values())))
  colours = matplotlib.colormaps['tab10' if len(class_names) <= 10 else 'tab20'](
      np.arange(len(class_names)))
  classes = matplotlib.colors.ListedColormap(colours)
  fig, axes = plt.subplots(count, len(panels), figsize=(size * len(panels), size * count + 0.5),
                           squeeze=False)
  for row in range(count):
    for column, (name, values) in enumerate(panels.items()):
      ax = axes[row, column]
      if name == 'image':
        shown, cmap = _displayable(values[row])
        ax.imshow(shown, cmap=cmap, interpolation='nearest')
      else:
        ax.imshow(values[row], cmap=classes, vmin=-0.5, vmax=len(class_names) - 0.5,
                  interpolation='nearest')
      if row == 0:
        ax.set_title(name, fontsize=9)
      ax.axis('off')
  handles = [mpatches.Patch(color=colour, label=name) for colour, name in zip(colours, class_names)]
  fig.legend(handles=handles, loc='lower center', ncol=columns or len(class_names), fontsize=8,
             frameon=False)
  fig.tight_layout(rect=(0, 0.5 / (size * count + 0.5), 1, 1))
  if save:
    fig.savefig(save, dpi=110, bbox_inches='tight')
  return fig


def embedding_scatter(points: np.ndarray, labels: np.ndarray,
                      class_names: Sequence[str] | None = None, title: str = 't-SNE',
                      save: str | None = None):
  """2-D points coloured by class (e.g. `tsne` of `embeddings`)."""
  points, labels = np.asarray(points), np.asarray(labels)
  fig, ax = plt.subplots(figsize=(5.5, 5))
  cmap = matplotlib.colormaps['tab10' if labels.max() < 10 else 'tab20']
  for c in np.unique(labels):
    chosen = labels == c
    ax.scatter(*points[chosen].T, s=6, color=cmap(int(c) % cmap.N),
               label=class_names[c] if class_names else str(c))
  ax.legend(markerscale=2.5, fontsize=7, loc='best', ncol=2)
  ax.set_title(title)
  ax.set_xticks([])
  ax.set_yticks([])
  return _finish(fig, save)


def receptive_field_boxes(image: np.ndarray, boxes: dict[str, tuple], save: str | None = None):
  """Rectangles over an image: ``{label: ((row, col) of the first pixel, (height, width))}``."""
  shown, cmap = _displayable(image)
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.imshow(shown, cmap=cmap)
  colours = matplotlib.colormaps['plasma'](np.linspace(0.1, 0.9, len(boxes)))
  for colour, (label, ((row, col), (height, width))) in zip(colours, boxes.items()):
    ax.add_patch(mpatches.Rectangle((col - 0.5, row - 0.5), width, height, fill=False, lw=2,
                                    edgecolor=colour, label=f'{label}: {height}x{width}'))
  ax.legend(fontsize=8, loc='lower right')
  ax.axis('off')
  return _finish(fig, save)


def pwm_of_kernel(kernel: np.ndarray, temperature: float | None = None) -> np.ndarray:
  """A motif filter [width, 4] as base probabilities per position: ``softmax(w / temperature)``.

  The default temperature is the weights' standard deviation, so the logo's contrast does not
  depend on the filter's scale.
  """
  kernel = np.asarray(kernel, np.float64)
  temperature = temperature or float(kernel.std()) or 1.0
  weights = np.exp((kernel - kernel.max(-1, keepdims=True)) / temperature)
  return weights / weights.sum(-1, keepdims=True)


def _draw_letter(ax, letter: str, x: float, bottom: float, height: float) -> None:
  path = TextPath((0, 0), letter, size=1, prop={'family': 'DejaVu Sans', 'weight': 'bold'})
  box = path.get_extents()
  transform = (Affine2D().translate(-box.x0, -box.y0)
               .scale(0.9 / box.width, height / box.height).translate(x - 0.45, bottom))
  ax.add_patch(mpatches.PathPatch(transform.transform_path(Path(path.vertices, path.codes)),
                                  color=BASE_COLOURS.get(letter, 'black'), lw=0))


def motif_logo(pwm: np.ndarray, alphabet: str = 'ACGT', title: str | None = None, ax=None,
               save: str | None = None):
  """A sequence logo: at each position the letters stacked by probability, the stack as tall as
  the information content ``log2(A) - H`` (bits). ``pwm`` [L, A] (see `pwm_of_kernel`)."""
  pwm = np.asarray(pwm, np.float64)
  pwm = pwm / pwm.sum(-1, keepdims=True)
  fig = None
  if ax is None:
    fig, ax = plt.subplots(figsize=(0.45 * len(pwm) + 1, 2))
  entropy = -(pwm * np.log2(np.clip(pwm, 1e-12, 1))).sum(-1)
  information = np.log2(len(alphabet)) - entropy
  for position, (probabilities, bits) in enumerate(zip(pwm, information)):
    bottom = 0.0
    for index in np.argsort(probabilities):
      height = probabilities[index] * bits
      if height > 1e-3:
        _draw_letter(ax, alphabet[index], position, bottom, height)
        bottom += height
  ax.set_xlim(-0.6, len(pwm) - 0.4)
  ax.set_ylim(0, np.log2(len(alphabet)))
  ax.set_ylabel('bits')
  ax.set_xticks(range(len(pwm)))
  ax.tick_params(labelsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  return _finish(fig or ax.figure, save)


def mutation_map(changes: np.ndarray, sequence: np.ndarray, alphabet: str = 'ACGT',
                 title: str | None = None, save: str | None = None):
  """DeepBind's mutation map of one sequence: above, the sequence with each letter as tall as the
  score lost when it is mutated away; below, the change for every substitution ([L, A])."""
  changes, sequence = np.asarray(changes), np.asarray(sequence)
  letters = sequence.argmax(-1)
  importance = np.maximum(-changes.min(-1), 0)
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(min(0.16 * len(changes) + 2, 20), 3.4),
                                    height_ratios=(1, 1.3), sharex=True, layout='constrained')
  for position, (letter, height) in enumerate(zip(letters, importance)):
    if height > 1e-6:
      _draw_letter(top, alphabet[letter], position, 0.0, height)
  top.set_ylim(0, max(importance.max(), 1e-6) * 1.05)
  top.set_ylabel('score lost')
  if title:
    top.set_title(title, fontsize=9)
  limit = float(np.abs(changes).max()) or 1.0
  image = bottom.imshow(changes.T, aspect='auto', cmap='RdBu_r', vmin=-limit, vmax=limit,
                        interpolation='nearest')
  bottom.set_yticks(range(len(alphabet)), list(alphabet))
  bottom.set_xlabel('position')
  # Beside the map, not below it, so its label never meets the axis label.
  fig.colorbar(image, ax=[top, bottom], location='right', fraction=0.03, pad=0.01,
               label='change of\nthe target logit')
  top.set_xlim(-0.6, len(changes) - 0.4)
  if save:
    fig.savefig(save, dpi=110, bbox_inches='tight')
  return fig
