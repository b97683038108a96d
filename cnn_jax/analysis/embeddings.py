"""Embeddings: what the network's last hidden layer makes of each example, and a 2-D map of them."""

from collections.abc import Iterable

import jax
import numpy as np

from cnn_jax.analysis import probe


def _vectors(features: jax.Array) -> np.ndarray:
  """[N, D]: spatial positions averaged away, so every example is one vector."""
  features = np.asarray(features, np.float32)
  return features.reshape(features.shape[0], -1, features.shape[-1]).mean(1) if (
      features.ndim > 2) else features


def embeddings(run_or_model, variables: dict | None = None, batches: Iterable | None = None,
               layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(features [M, D], labels [M])`` of every example in ``batches``.

  Args:
    run_or_model: a `Run` (its model, variables and eval split are the defaults) or a model.
    batches: dicts with 'image' and 'label' (a run's `eval_batches()`).
    layer: whose output to take; default the last hidden layer (the input of the model's head).
      Spatial positions are averaged, so each example is one vector.
  """
  model = getattr(run_or_model, 'model', run_or_model)
  if variables is None:
    variables = run_or_model.variables
  if batches is None:
    batches = run_or_model.eval_batches()
  extract = jax.jit(lambda x: probe.head_input(model, variables, x) if layer is None else
                    probe.feature_maps(model, variables, x, [layer])[layer])
  features, labels = [], []
  for batch in batches:
    features.append(_vectors(extract(batch['image'])))
    labels.append(np.asarray(batch['label']))
  return np.concatenate(features), np.concatenate(labels)


def tsne(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
  """[M, 2] t-SNE points (scikit-learn), after PCA to at most 50 dimensions as van der Maaten
  recommends: neighbours in the map are neighbours in feature space."""
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  features = np.asarray(features, np.float64)
  if features.shape[1] > 50:
    features = PCA(50, random_state=seed).fit_transform(features)
  perplexity = min(perplexity, (len(features) - 1) / 3)
  return TSNE(2, perplexity=perplexity, init='pca', random_state=seed).fit_transform(features)
