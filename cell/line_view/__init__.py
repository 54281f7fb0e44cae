"""The live line page of ``cell inspect --serve``: :class:`~cell.line_view.state.LineViewSink` (a line sink
holding what the page shows) and :class:`~cell.line_view.server.LineViewServer` (its local HTTP server)."""
from cell.line_view.server import LineViewServer
from cell.line_view.state import LineViewSink

__all__ = ["LineViewServer", "LineViewSink"]
