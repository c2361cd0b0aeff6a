"""Training data: corpus sources, preparation into token shards, and the packing loader."""
