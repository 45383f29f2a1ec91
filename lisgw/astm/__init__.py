"""ASTM: E1381 (LIS01-A2) link layer and E1394 (LIS02-A2) record codec, sans-IO."""
