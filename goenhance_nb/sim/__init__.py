"""A local, faithful HTTP simulator of the GoEnhance video-to-video API.

Run it with ``python -m goenhance_nb.sim`` (or the ``goenhance-sim`` script); the HTTP contract
is docs/ARCHITECTURE.md section 1. This package imports nothing else from ``goenhance_nb``, and
nothing else in ``goenhance_nb`` imports it: the client only starts the process and reads its
port file.

Modules: ``__main__`` (CLI, socket, uvicorn), ``app`` (Starlette routes, logging and fault
middleware), ``core`` (the ``Simulator`` that ties the rest together under one lock),
``catalog`` (models, prices), ``accounts`` (credits, daily cap), ``jobs`` (the typed job
record, body validation), ``schedule`` (queue slots and lifecycle as functions of time),
``render`` (source fetch, transform, render cache), ``signing`` (result URLs), ``persist``
(atomic JSON files), ``config`` (defaults, patch validation), ``faults`` (one-shot fault
queue), ``media`` (PyAV + numpy style transforms and previews).
"""
