"""lisgw: a laboratory instrument gateway between analyzers (ASTM, HL7) and a HIS."""

__version__ = "0.1.0"
