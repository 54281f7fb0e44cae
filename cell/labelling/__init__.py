"""The labelling app: ground-truth defect masks for captured image sets, edited in the browser.

Masks carry a defect type per region (a per-pixel type map stored beside the binary mask).

Modules: :mod:`.masks` (pure mask logic: brush, eraser, superpixels, polygon, flood fill, typed masks,
undo/redo),
:mod:`.carry` (carrying a mask across poses through the table-plane homography), :mod:`.review`
(a trained model's heatmaps and the disagreement ranking), :mod:`.api` (the app's operations over a
capture store, transport-free), :mod:`.server` (the local HTTP server and its safety checks) and
``static/`` (the browser client: plain HTML/JS/CSS, no build step, no external assets), and
:mod:`.simdata` (a small simulated capture store for trying, testing and benchmarking the app).
"""
