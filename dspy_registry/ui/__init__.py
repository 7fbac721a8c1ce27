"""The registry's web view: `dspyreg ui` (app.py, a read-only FastAPI app) and `dspyreg site DIR` (site.py, the same
pages as static files). pages.py renders every page from the Registry facade; charts.py draws SVG in Python."""
