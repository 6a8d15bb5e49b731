"""Benchmarks of lrsl-rt. Each module at this level is an entry script, run from the checkout as
``python -m benchmarks.NAME --help``; what they share lives in :mod:`benchmarks.lib`. They are not part
of the installed package, and the tests only smoke-run them (never timing anything).

Entry scripts, and what each measures:

==================  ================================================================================
``latency``         latency, throughput, memory and start-up of lrsl-rt against PyTorch and Optimum
                    (``make bench``)
``accuracy``        accuracy of the PyTorch checkpoint and of its bundles on one split (``make accuracy``)
``datasets_table``  the multi-data-set accuracy table from what ``train`` and ``export`` wrote
                    (``make table``)
``levers``          label representations, hardness gates and an MLP reranker on a checkpoint, without
                    retraining (``make levers``)
``gate_measures``   the gate's sureness measure chosen on the levers of several data sets, pooled
``embedder_lever``  the embedder's training budget and negatives against the checkpoint's embedder
``int8_variants``   int8 quantization variants of a classifier: agreement with fp32, accuracy, speed
``quant_presets``   the export's int8 presets side by side: agreement, accuracy, batch invariance, size,
                    speed
``invariance``      batch invariance: the share of texts whose answer alone and in a batch differ
``profile_ops``     where the classifier spends its time, per ONNX operator type
``serve``           ``lrsl-rt serve`` under wrk's closed loop and an open loop at fixed rates (429s
                    past the maximum), against the in-process Reranker; client and server CPU
``scaleout``        rows per second of ``lrsl-rt predict --engine ray`` against the in-process CLI
``soak``            resident memory over many predictions through the API and the CLI
``open_intent``     out-of-scope texts: every abstain score's AUROC and the chosen operating point
                    (``make open-intent``, ``make oos``)
``abstain_cost``    the same bundles with abstain on and off in one process: batch 1, 32 per call, the
                    Reranker's stage times, test AUROC and recall against kNN on every text
                    (``make abstain-cost``)
``gpu_check``       fp16 bundles on CUDA: parity with the CPU provider, batch 1/32 against PyTorch on
                    CUDA (``make gpu-check``, in an environment of its own)
``results_doc``     not a measurement: the pages of ``docs/results/``, one per question and data set,
                    from the newest run of their JSON history, and the README's results block
                    (``make results``)
``run_record``      not a measurement: runs a command (training, export) and records its run beside
                    its output
==================  ================================================================================
"""
