"""Generation engines behind one protocol: see amcs.backends.base."""
