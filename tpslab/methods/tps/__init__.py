"""TPS (Ma et al., AAAI 2025), the method this lab is built around, behind the common interface.

The model itself is :class:`tpslab.methods.tps.model.TPS` (``tpslab.build_model`` builds it too); this
module only gives the registry its settings class and constructor.
"""

from __future__ import annotations

from tpslab.methods.tps.model import TPS, TPSConfig

Settings = TPSConfig  # the registry's name for a method's settings


def build(settings: TPSConfig) -> TPS:
    """The registry's entry point (see :func:`tpslab.methods.build_method`)."""
    return TPS(settings)
