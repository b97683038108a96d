"""Analysis of trained runs: open a checkpoint in one line, look inside the network.

    from cnn_jax import analysis
    run = analysis.load_run('runs/digits')
    maps = analysis.saliency(run.model, run.variables, images, target=None)

Every method is a pure function of ``(model, variables, x, ...)`` with ``x`` a batch, so it works
on any registered model (1-D and 2-D) without editing it; figures are in `analysis.plots`.
"""

# The figures, so that `analysis.plots` works after `from cnn_jax import analysis` alone.
from cnn_jax.analysis import plots  # noqa: F401  pylint: disable=unused-import
from cnn_jax.analysis.attribution import (GradCAM, deconvnet, grad_cam, guided_backprop,
                                          integrated_gradients, saliency, smoothgrad)
from cnn_jax.analysis.embeddings import embeddings, tsne
from cnn_jax.analysis.features import TopPatches, filters, top_patches
from cnn_jax.analysis.perturbation import mutation_map, occlusion
from cnn_jax.analysis.pretrained import Pretrained, load_pretrained
from cnn_jax.analysis.probe import feature_maps, layer_names
from cnn_jax.analysis.receptive_field import EmpiricalField, empirical_receptive_field
from cnn_jax.analysis.run import Run, load_or_train, load_run, read_config
