"""`python -m spnet_jax.profile`: the command in `spnet_jax/cli/profile.py`."""

from spnet_jax.cli import entry, profile

if __name__ == '__main__':
    entry.run(profile)
