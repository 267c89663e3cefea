"""Experiment configs: one `get_config()` per file (ml_collections), used with
`python main.py --config=configs/<name>.py --workdir=...`."""
