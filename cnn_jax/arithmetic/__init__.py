"""Convolution arithmetic: the closed-form rules (`formulas`: output sizes, padding, receptive
fields, parameters, multiply-adds) and a real model's per-layer table read off its trace
(`summary`: `summarize`, `layer_fields`). See docs/arithmetic.md."""

from cnn_jax.arithmetic.formulas import (PADDING_MODES, ConvGeometry, Field, Padding, as_tuple,
                                         conv_geometry, conv_macs, conv_output_shape, conv_params,
                                         conv_transpose_geometry, conv_transpose_output_shape,
                                         padding_pairs, pool_output_shape, receptive_fields)
from cnn_jax.arithmetic.summary import LayerSummary, Summary, layer_fields, summarize

__all__ = ['PADDING_MODES', 'ConvGeometry', 'Field', 'LayerSummary', 'Padding', 'Summary',
           'as_tuple', 'conv_geometry', 'conv_macs', 'conv_output_shape', 'conv_params',
           'conv_transpose_geometry', 'conv_transpose_output_shape', 'layer_fields',
           'padding_pairs', 'pool_output_shape', 'receptive_fields', 'summarize']
