"""``kldiv-onnx bench``: every KLDivLoss backend measured side by side in one run.

Backends (each skipped with a note when it cannot run here, never faked):

- ``fused``: onnxruntime running the one-node model with the native library registered;
- ``api``: ``KLDivLoss(reduction, threads=n)(x, t)`` exactly as a user calls it (backend
  'auto', numpy inputs, a new numpy result): the bare session plus the Python API's cost;
- ``composite``: onnxruntime running the same model's function body (no library);
- ``torch-export``: onnxruntime running ``F.kl_div`` as ``torch.onnx.export(dynamo=True)``
  writes it (needs torch; a model onnxruntime cannot load, e.g. bfloat16, is reported as
  failed with onnxruntime's message);
- ``torch-eager``: PyTorch eager ``F.kl_div`` (``torch.set_num_threads`` = the thread count);
- ``numpy-read``: numpy reading both inputs once (an integer sum over their raw bytes, split
  over the same number of threads): the memory-bound reference line;
- ``torch-read``: torch's sums of both inputs (``torch.set_num_threads`` = the thread count),
  the other read bound; the kernel is held to the faster of the two.

What is timed: one call with the inputs already in place. onnxruntime runs through an IOBinding
whose inputs are pre-bound ``OrtValue``s over the numpy buffers (no copy, no dtype conversion)
and whose output is bound to the CPU device, so onnxruntime allocates it in each run as torch
does; torch gets zero-copy ``from_numpy`` tensors. Every timing goes through :mod:`.timer` (which
also says what each figure means). Per point: warm-up runs, then repeats until both a minimum
count and a time budget are reached; the median, quartiles and min/max are kept, and the
median is the one compared.

Call overhead (``call_overhead`` in the JSON, skipped without the ``api`` backend or with
``Config.overhead`` off): float32 ``batchmean`` at (2, 2) and (64, 1000), one thread, the API
(``KLDivLoss`` and ``kl_div``) against torch eager ``F.kl_div`` and the bare pre-bound session,
measured side by side in alternating rounds (each a batch of calls), medians kept; the API's
time over torch eager's is checked against :data:`~.config.OVERHEAD_TARGETS` (no slower at
(2, 2), at most half at (64, 1000)).

Peak extra memory (``peak_extra_bytes``): the kernel's peak resident set size (``VmHWM`` in
``/proc/self/status``) during one call, minus the resident size just before it, after
resetting the peak with ``/proc/self/clear_refs`` (Linux >= 4.0). So it counts every page the
call touches beyond what was resident — its output, its temporaries, onnxruntime's and torch's
allocations alike — and not the inputs. Just before, glibc's ``malloc_trim(0)`` returns freed
heap pages to the kernel, so pages an earlier call freed are counted again when this call
reuses them. onnxruntime is measured on a twin session with its CPU arena off (warmed up by one
call on the first row): with the arena on, the intermediates of earlier calls stay resident
and a call shows no growth. Where the kernel cannot do this, the field is ``None``.

Kernel in cache vs ``torch.log`` (``kernel_log`` in the JSON, skipped with ``Config.kernel_log``
off): the fused float32 op (``batchmean`` and ``none``) against ``torch.log(t, out=o)``, one
thread, at 2**14, 2**16 and 2**18 elements, per SIMD target the CPU supports (one subprocess
each, ``$KLDIV_ONNX_ISA``; a target the core does not dispatch here is reported unsupported),
the fastest of alternating rounds; at 2**18 fused / torch.log of AVX-512
``batchmean`` is checked against :data:`~.kernel_log.KERNEL_LOG_TARGET` (1.0: the whole loss
for the price of one log); ``none`` and AVX2 are reported.
See :mod:`.kernel_log`.

Layout: :mod:`.config` (what to measure), :mod:`.timer` (warm-up, repeats, the figures),
:mod:`.machine` (machine info, the memory probe), :mod:`.backends` (each backend's call),
:mod:`.measure` (the runner: :func:`~.measure.run_benchmark`), :mod:`.overhead` (the
call-overhead section), :mod:`.kernel_log` (the kernel-in-cache section), :mod:`.compare`
(``--compare``: ``compare``'s KL stage and samples/s), :mod:`.verdicts` (ratios and targets),
:mod:`.report` (terminal tables), :mod:`.plot` (the throughput plot); the command is in
:mod:`kldiv_onnx.cli.bench`. The package writes no markdown: ``scripts/performance.py`` turns a
result's JSON into ``docs/performance.md``.
"""
