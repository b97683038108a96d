"""DeepBind on offline DNA sequences with a planted motif (binding) or a shuffled decoy.

  ./launch.sh --config=experiments/motifs_deepbind.py --workdir=runs/deepbind

Measured: 97.0% test accuracy at the last checkpoint (trained on 90% of train, 7 s on 2 CPU cores;
a scan with the true motif's log-odds gets 98.8%); the best filter correlates 0.89 with the
planted position weight matrix (`models.deepbind.motif_match`).
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'motifs'
  config.model.name = 'deepbind'
  config.model.kwargs.num_motifs = 16
  config.model.kwargs.motif_length = 16
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_epochs = 10
  config.optim.name = 'adam'
  config.optim.lr = 3e-3
  config.optim.schedule = 'cosine'
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint.every = 500
  # Batches of short sequences gathered from memory are cheaper to make in the training thread
  # than to hand over from grain's threads.
  config.data.num_threads = 0
  # A batch's transfer to the devices costs as much as making it: 8 go in one.
  config.data.batches_per_transfer = 8
  return config
