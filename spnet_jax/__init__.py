"""spnet_jax: Slimmable Pruned Neural Networks (SP-Net) in JAX/Flax."""
