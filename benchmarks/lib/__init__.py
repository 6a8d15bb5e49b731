"""What the entry scripts of :mod:`benchmarks` share; nothing here is a benchmark on its own.

- ``record``: the run record (command, machine, versions, git commit) and ``write_result``.
- ``machine``: the CPU, its int8 instructions and peak, the library versions.
- ``common``: reading texts, summary statistics, running a worker in a subprocess.
- ``contenders``, ``measure``, ``optimum_model``, ``startup``, ``summary``, ``latency_report``: the
  pieces of ``latency``.
- ``accuracy_report``: the table of ``accuracy`` (also a results page's body).
- ``batching``: a bundle's outputs alone and in shuffled batches (``invariance``, ``quant_presets``).
- ``lever_eval``: the levers as functions of cached arrays, and what ``levers`` and ``embedder_lever``
  share.
- ``results_render``: the tables of one results page, by kind; ``results_history``: the JSON history of
  each page; ``results_page``: a page's header and the index; ``results_readme``: the README's results
  block and ``readme.json`` (all four for ``results_doc``).
- ``serve_load``, ``serve_report``, ``wrk_predict.lua``: the load, the markdown and wrk's script of
  ``serve``; ``openloop``: its open-loop driver, run by it as ``python -m benchmarks.lib.openloop``
  in a process of its own (with ``--trivial-server``, the endpoint that checks the driver).
"""
