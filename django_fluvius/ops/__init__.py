"""Operations: rebuilding read models, replaying handlers, inspecting and verifying the store.

``rebuild`` (resumable, batched rebuilds of inline and async projections),
``replay`` (handlers run again over a range of events), ``inspection`` (what
``fluvius_inspect``, ``fluvius_stream`` and ``fluvius_verify`` compute) and
``progress`` (counts, rate and ETA on a terminal or in a log).

Invariant: above delivery (a replay delivers through the live path); only the
faces (management commands, the admin) import it.
"""
