"""The zoo's experiments on their real offline datasets: segmentation (per-pixel labels, mean IoU),
DeepBind on planted motifs, and the task checks that catch a model/data mismatch early."""

import jax
import numpy as np
import pytest

from cnn_jax.data import augment, motifs, pipeline, shapes, sources
from cnn_jax.models import deepbind
from cnn_jax.train import checkpoint, loop, metrics
from experiments import (motifs_deepbind, shapes_dilated, shapes_fcn, shapes_segnet, shapes_unet)
from tests.test_train import override


@pytest.mark.slow
def test_deepbind_experiment_reaches_95_percent_and_recovers_the_motif(tmp_path, data_dir):
  config = override(motifs_deepbind.get_config(), {'data.data_dir': data_dir})
  workdir = str(tmp_path / 'deepbind')
  results = loop.train_and_evaluate(config, workdir)  # the shipped config, unchanged (~20 s)
  assert results['last']['test']['accuracy'] >= 0.95
  mngr = checkpoint.manager(workdir, read_only=True)
  kernel = np.asarray(mngr.restore(mngr.latest_step())['params']['motifs']['kernel'])
  correlation, _, _ = deepbind.motif_match(kernel, motifs.motif_pwm())
  model = loop.build_model(config, 2)
  untrained = model.init(jax.random.key(0), np.zeros((1, motifs.LENGTH, 4), np.float32))
  baseline, _, _ = deepbind.motif_match(np.asarray(untrained['params']['motifs']['kernel']),
                                        motifs.motif_pwm())
  assert correlation >= 0.7 > baseline + 0.2


def test_motif_data_plants_the_pwm_in_binding_sequences_only():
  x, labels = motifs.generate(400, seed=3)
  assert x.shape == (400, motifs.LENGTH, 4) and np.all(x.sum(-1) == 1)
  assert abs(labels.mean() - 0.5) < 1e-9
  log_odds = np.log(motifs.motif_pwm() + 1e-3) - np.log(0.25)
  width = motifs.MOTIF_LENGTH
  best = np.stack([(x[:, i:i + width] * log_odds).sum((1, 2))
                   for i in range(motifs.LENGTH - width + 1)], 1).max(1)
  assert best[labels == 1].mean() > best[labels == 0].mean() + 5  # nats


def test_shapes_scenes_label_every_pixel_and_are_reproducible():
  first = [shapes.render(np.random.default_rng(7)) for _ in range(2)]
  np.testing.assert_array_equal(first[0][0], first[1][0])
  images, labels = zip(*[shapes.render(np.random.default_rng(seed)) for seed in range(40)])
  labels = np.stack(labels)
  assert np.stack(images).shape == (40, shapes.SIZE, shapes.SIZE, 3)
  assert set(np.unique(labels)) == set(range(len(shapes.CLASSES)))
  assert 0.05 < (labels > 0).mean() < 0.5


@pytest.mark.slow
@pytest.mark.parametrize('experiment', [shapes_unet, shapes_fcn, shapes_segnet, shapes_dilated])
def test_segmentation_experiments_train_and_report_mean_iou(experiment, tmp_path, data_dir):
  config = override(experiment.get_config(), {
      'data.data_dir': data_dir, 'num_steps': 2, 'batch_size': 8, 'eval_batch_size': 200,
      'data.train_split': 'train[:95%]', 'data.val_split': 'train[95%:]',
      'data.test_split': 'test[:300]', 'log_every': 2, 'eval_every': 2, 'checkpoint.every': 2})
  final = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert final['last']['val']['count'] == 200
  results = final['last']['test']
  assert results['count'] == 300
  assert 0.0 < results['mean_iou'] <= 1.0 and np.isfinite(results['loss'])
  assert 'top5_accuracy' not in results


def test_mean_iou_is_computed_over_the_whole_split():
  logits = np.eye(3)[np.array([[[0, 1], [1, 2]], [[0, 0], [2, 2]]])]  # predictions
  labels = np.array([[[0, 1], [2, 2]], [[0, 0], [2, 1]]])
  confusion = metrics.confusion_matrix(logits, labels, np.ones(2))
  # Class 0: 3/3; class 1: 1 TP, 1 FP, 1 FN -> 1/3; class 2: 2 TP, 1 FP, 1 FN -> 2/4.
  assert metrics.mean_iou(confusion) == pytest.approx((1 + 1 / 3 + 0.5) / 3)


def test_pixel_labels_move_with_the_pixels_in_augmentation():
  image = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  label = (image[..., 0] % 4).astype(np.uint8)
  params = shapes_unet.get_config().data.augment
  params.crop_padding = 1
  out = pipeline._augment({'image': image, 'label': label}, np.random.default_rng(0),  # pylint: disable=protected-access
                          augment.plan(('random_crop', 'flip'))['batch'], params)
  assert out['image'].shape == image.shape and out['label'].shape == label.shape
  inside = out['image'][..., 0] > 0  # where the crop did not bring in zero padding
  np.testing.assert_array_equal(out['label'][inside], out['image'][..., 0][inside] % 4)


@pytest.mark.parametrize('overrides,message', [
    ({'model.name': 'simple_cnn', 'model.kwargs': {}}, 'dense-prediction model'),
    ({'loss': 'softmax_cross_entropy'}, 'per-pixel labels'),
    ({'checkpoint.best_metric': 'top5_accuracy'}, 'not computed for per-pixel'),
])
def test_a_model_or_metric_that_does_not_fit_the_labels_fails_before_compiling(
    overrides, message, tmp_path, data_dir):
  config = override(shapes_unet.get_config(), {'data.data_dir': data_dir, **overrides})
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert sources.load('shapes', 'test', data_dir).label_shape == (shapes.SIZE, shapes.SIZE)
