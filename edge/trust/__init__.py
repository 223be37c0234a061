"""What the board trusts: the bundle's manifest, hashes, signature and golden self-test, and the safe readers
(YAML, .npz, paths) they rest on."""
