"""`python -m spnet_jax.prune`: the command in `spnet_jax/cli/prune.py`."""

from spnet_jax.cli import entry, prune

if __name__ == '__main__':
    entry.run(prune)
