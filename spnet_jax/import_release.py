"""`python -m spnet_jax.import_release`: the command in `spnet_jax/cli/import_release.py`."""

from spnet_jax.cli import entry, import_release

if __name__ == '__main__':
    entry.run(import_release)
