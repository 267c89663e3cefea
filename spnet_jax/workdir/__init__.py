"""A run's folder: the stage layout, Orbax checkpoints with their `Structure` and
architecture (`checkpoint`), loading a network onto devices (`loading`, `spnet_jax.load`),
the release's checkpoints (`convert_torch`) and standalone sub-networks (`export`)."""
