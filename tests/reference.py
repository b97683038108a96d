"""Independent plain-numpy references: loops over output positions, no JAX, no cnn_jax code."""

import itertools
import math

import numpy as np


def explicit_padding(padding, input_size, kernel_size, strides, dilation):
  """The padding rules, written out separately from `cnn_jax.arithmetic`."""
  pairs = []
  for i, k, s, d in zip(input_size, kernel_size, strides, dilation):
    span = d * (k - 1)
    if padding == 'VALID':
      pairs.append((0, 0))
    elif padding == 'FULL':
      pairs.append((span, span))
    elif padding == 'HALF':
      pairs.append((span // 2, span // 2))
    elif padding == 'CAUSAL':
      pairs.append((span, 0))
    elif padding == 'SAME':
      out = math.ceil(i / s)
      total = max(0, (out - 1) * s + span + 1 - i)
      pairs.append((total // 2, total - total // 2))
    elif isinstance(padding, int):
      pairs.append((padding, padding))
    else:
      pairs = [tuple(p) for p in padding]
      break
  return pairs


def conv(x, w, strides, pads, dilation, groups=1):
  """Cross-correlation of x [N, *S, C] with w [*K, C/groups, F]."""
  rank = w.ndim - 2
  xp = np.pad(x, [(0, 0), *pads, (0, 0)])
  kernel = w.shape[:rank]
  out_size = [(xp.shape[1 + a] - dilation[a] * (kernel[a] - 1) - 1) // strides[a] + 1
              for a in range(rank)]
  cin_g, features = w.shape[-2], w.shape[-1]
  f_g = features // groups
  out = np.zeros((x.shape[0], *out_size, features))
  for o in itertools.product(*map(range, out_size)):
    for k in itertools.product(*map(range, kernel)):
      pos = tuple(o[a] * strides[a] + k[a] * dilation[a] for a in range(rank))
      patch = xp[(slice(None), *pos)]
      for g in range(groups):
        out[(slice(None), *o, slice(g * f_g, (g + 1) * f_g))] += (
            patch[:, g * cin_g:(g + 1) * cin_g] @ w[k][:, g * f_g:(g + 1) * f_g])
  return out


def true_convolution_1d(x, w):
  """The textbook definition (x * w)(t) = sum_m x(m) w(t - m), every t with an overlap."""
  out = np.zeros(len(x) + len(w) - 1)
  for t in range(len(out)):
    for m in range(len(x)):
      if 0 <= t - m < len(w):
        out[t] += x[m] * w[t - m]
  return out


def conv_transpose(y, w, strides, pads, dilation, output_padding):
  """Scatter definition: every input value adds its kernel-weighted copy to the output.

  y [N, *S, C]; w [*K, F, C] (the layout of the convolution being transposed).
  """
  rank = w.ndim - 2
  kernel = w.shape[:rank]
  full = [(y.shape[1 + a] - 1) * strides[a] + dilation[a] * (kernel[a] - 1) + 1 for a in range(rank)]
  out = np.zeros((y.shape[0], *[f + op for f, op in zip(full, output_padding)], w.shape[-2]))
  for i in itertools.product(*(range(n) for n in y.shape[1:-1])):
    for k in itertools.product(*map(range, kernel)):
      pos = tuple(i[a] * strides[a] + k[a] * dilation[a] for a in range(rank))
      out[(slice(None), *pos)] += y[(slice(None), *i)] @ w[k].T
  crop = tuple(slice(lo, out.shape[1 + a] - hi) for a, (lo, hi) in enumerate(pads))
  return out[(slice(None), *crop)]


def pool(x, window, strides, pads, reduce, pad_value=0.0):
  """Applies reduce(values) to every window of x [N, *S, C] (padding with pad_value)."""
  rank = len(window)
  xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
  inside = np.pad(np.ones(x.shape[1:-1]), pads)
  out_size = [(xp.shape[1 + a] - window[a]) // strides[a] + 1 for a in range(rank)]
  out = np.zeros((x.shape[0], *out_size, x.shape[-1]))
  for o in itertools.product(*map(range, out_size)):
    region = tuple(slice(o[a] * strides[a], o[a] * strides[a] + window[a]) for a in range(rank))
    values = xp[(slice(None), *region)].reshape(x.shape[0], -1, x.shape[-1])
    out[(slice(None), *o)] = reduce(values, inside[region].reshape(-1))
  return out
