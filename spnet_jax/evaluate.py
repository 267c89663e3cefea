"""`python -m spnet_jax.evaluate`: the command in `spnet_jax/cli/evaluate.py`."""

from spnet_jax.cli import entry, evaluate

if __name__ == '__main__':
    entry.run(evaluate)
