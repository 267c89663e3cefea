"""The core every layer builds on: the channel-dependency table (`channels`), per-sub-network
channel counts (`structure`), slimmable layers (`layers`), MACs and params (`cost`), the
device mesh (`sharding`) and the one exception users see (`errors`)."""
