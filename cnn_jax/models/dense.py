"""What the dense-prediction (segmentation) nets share: input checks."""

import jax


def check_divisible(model: str, x: jax.Array, factor: int, field: str) -> None:
  """Raises if a spatial size of ``x`` [N, *S, C] is not a multiple of the net's total stride."""
  if any(size % factor for size in x.shape[1:-1]):
    raise ValueError(f'{model} needs spatial sizes divisible by {factor} (its total downsampling, '
                     f'from {field}); got an input of shape {tuple(x.shape)}. Resize or pad the '
                     f'input to a multiple of {factor}.')
