"""`python -m spnet_jax.export`: the command in `spnet_jax/cli/export.py`."""

from spnet_jax.cli import entry, export

if __name__ == '__main__':
    entry.run(export)
