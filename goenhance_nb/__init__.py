"""goenhance_nb: GoEnhance AI video-to-video in Jupyter notebooks.

Load the magics with ``%load_ext goenhance_nb``; from Python use :func:`transform`.
Names are imported lazily so ``import goenhance_nb`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> private module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "GoEnhanceError": "_errors",
    "ConfigError": "_errors",
    "AuthError": "_errors",
    "APIError": "_errors",
    "InsufficientCredits": "_errors",
    "InvalidParameters": "_errors",
    "RateLimited": "_errors",
    "TransportError": "_errors",
    "JobFailed": "_errors",
    "JobTimedOut": "_errors",
    "ResultExpired": "_errors",
    "CacheError": "_errors",
    "LedgerError": "_errors",
    "InputError": "_errors",
    "BudgetExceeded": "_errors",
    "DiskFull": "_errors",
    "TooLarge": "_errors",
    # warnings (filterable; the magics show them as one plain line)
    "GoEnhanceWarning": "_errors",
    "InputWarning": "_errors",
    "StorageWarning": "_errors",
    "ReplayMiss": "_errors",
    "BundleError": "_errors",
    # settings and records
    "Settings": "_settings",
    "Style": "_records",
    "Credits": "_records",
    "JobState": "_lifecycle",
    "JobSpec": "_records",
    # engine and session
    "Session": "_session",
    "get_session": "_session",
    "transform": "_session",
    "resume": "_session",
    "styles": "_session",
    "credits": "_session",
    "simulator": "_session",
    "SimulatorControl": "_simcontrol",
    "Job": "_job",
    "JobEvent": "_job",
    "ResultRecord": "_cache",
    "Client": "_sync",
    "sample_clip": "_samples",
    # reproducible notebooks (issue 14)
    "verify": "_repro",
    "export_bundle": "_session",
    "import_bundle": "_session",
    "sweep": "_sweep",
    "wait_all": "_progress",
    # notebook layer
    "panel": "_panel",
    "StatusWidget": "widgets",
    "result_grid": "_display",
}

__all__ = [*sorted(_EXPORTS), "__version__", "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'goenhance_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"goenhance_nb.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%goenhance`` / ``%%goenhance`` (called by ``%load_ext goenhance_nb``)."""
    from goenhance_nb._magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics again (``%unload_ext goenhance_nb``)."""
    from goenhance_nb._magics import unload_ipython_extension as _unload

    _unload(ipython)


if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from goenhance_nb._errors import *  # noqa: F403
