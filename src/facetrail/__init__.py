"""facetrail: accountable face search over photo collections you lawfully hold."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Facetrail", "__version__", "open"]

if TYPE_CHECKING:
    from facetrail.engine import Facetrail


def open(home: Any = None, **overrides: Any) -> Facetrail:  # noqa: A001
    """Open a facetrail data directory; see :func:`facetrail.engine.open`."""
    from facetrail.engine import open as _open

    return _open(home, **overrides)


def __getattr__(name: str) -> Any:
    if name == "Facetrail":
        from facetrail.engine import Facetrail

        return Facetrail
    raise AttributeError(name)
