"""facetrail: accountable face search over photo collections you lawfully hold.

Open a data directory, register a collection with its lawful basis, index it, and search
it for a face; every search needs a case and a purpose, and is audited::

    import facetrail

    with facetrail.open("/data/facetrail") as ft:
        ft.add_source("case-0417", "folder", "/evidence/0417",
                      lawful_basis="warrant 2026-0417", purpose="robbery investigation",
                      retention_days=365)
        report = ft.ingest("case-0417")        # incremental; run again to resume
        result = ft.search("probe.jpg", case_ref="2026-0417", purpose="identify suspect")
        for c in result.candidates:            # leads for a person to review, not identities
            print(c.rank, c.score, [a.location for a in c.appearances])

``facetrail.open`` returns a :class:`facetrail.engine.Facetrail`, the whole public API (the
command line and the web app call it too); see ``help(facetrail.engine.Facetrail)``.
Everything it raises on purpose is a ``facetrail.errors.FacetrailError`` with a stable
``code``. Settings come from ``FACETRAIL_*`` environment variables or keyword arguments of
``open`` (``facetrail.settings.Settings``).
"""

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
