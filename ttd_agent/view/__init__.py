"""`ttd-agent view RUN_DIR`: a page of one run (its search, its programs, its cost), live or exported.

    reader.py   reads a run directory incrementally and tolerantly (unfinished, damaged, older runs)
    payload.py  turns what was read into the JSON the page draws
    page.py     the page: one HTML file with every script and style inlined from the package
    server.py   serves the page on 127.0.0.1 with a small version endpoint the page polls
    static/     the page's own script and style (Plotly comes from the `plotly` package, `[view]` extra)

The trainer never imports this package: the viewer only reads what the run directory holds.
"""
