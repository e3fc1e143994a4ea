"""Interactive exploration of a run in JupyterLab (ipywidgets). See :class:`amt_core.explore.widgets.CaseBrowser`."""

from __future__ import annotations


def __getattr__(name):  # lazy: importing amt_core.explore stays light
    if name == "CaseBrowser":
        from amt_core.explore.widgets import CaseBrowser

        return CaseBrowser
    raise AttributeError(name)
