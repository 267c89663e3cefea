"""The command-line faces: `main.py` (`train`) and ``python -m spnet_jax.<tool>`` (`prune`,
`evaluate`, `export`, `profile`, `import_release`), all run through `entry.run`. Nothing
below imports them."""
