"""Pure linen modules and functions for convolutional networks, channels last, 1-D/2-D/3-D."""

from cnn_jax.layers.blocks import (BatchNorm, BottleneckBlock, ConvNormAct, DenseBlock, FusedMBConv,
                                   HighwayBlock, InceptionModule, MBConv, PreActResidualBlock,
                                   ResidualBlock, SqueezeExcite, Transition)
from cnn_jax.layers.constraints import constrain_kernels, max_norm, unit_norm
from cnn_jax.layers.conv import (Conv, ConvTranspose, DepthwiseConv, SeparableConv,
                                 SpatiallySeparableConv, conv_matrix, separable_factors)
from cnn_jax.layers.pooling import (avg_pool, channel_max_pool, global_avg_pool, global_max_pool,
                                    lp_pool, max_pool, max_pool_with_indices, max_unpool,
                                    stochastic_pool)
from cnn_jax.layers.regularization import SpatialDropout, StochasticDepth
from cnn_jax.layers.upsample import Upsample, bilinear_kernel_init
