"""The driver catalogue: analyzer profiles as data, auto-detection, normalization.

Layer: drivers, above the protocol layers (``lisgw.astm``, ``lisgw.hl7``) and the domain model
(``lisgw.model``), below routing, store and services. A lab adds an analyzer by writing a YAML
profile (drivers/README.md), not Python.

* ``lisgw.drivers.schema``: read, validate and merge profiles (the only YAML parsing).
* ``lisgw.drivers.compiled``: profiles compiled into accessors and compiled regexes.
* ``lisgw.drivers.catalogue``: every profile loaded once; ``get("name@version")``, ``detect``.
* ``lisgw.drivers.engine``: decoded messages → ``NormalizedMessage`` with a compiled profile.
* ``translit``, ``values``, ``timestamps``, ``mapping``: text, numbers, times, test codes.

Typical use::

    catalogue = default_catalogue()
    profile = catalogue.detect(first_message)          # or catalogue.get("sysmex-xn@1")
    normalized = normalize(message, profile, tz="Asia/Ho_Chi_Minh")
"""

from lisgw.drivers.catalogue import BUILTIN_DIRS, Catalogue, default_catalogue
from lisgw.drivers.compiled import CompiledProfile, composite_value
from lisgw.drivers.engine import normalize, normalize_astm, normalize_hl7, not_mine_message

__all__ = [
    "BUILTIN_DIRS",
    "Catalogue",
    "CompiledProfile",
    "composite_value",
    "default_catalogue",
    "normalize",
    "normalize_astm",
    "normalize_hl7",
    "not_mine_message",
]
