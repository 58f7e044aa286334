"""Training and evaluation engine behind ``tools/train.py``, ``tools/test.py`` and ``tools/demo.py``.

* :mod:`rdd.engine.optimization` -- ``adam_onecycle`` (OpenPCDet), ``adam``/``sgd`` with step decay.
* :mod:`rdd.engine.trainer` -- :class:`~rdd.engine.trainer.Trainer`, the training loop;
  :mod:`rdd.engine.hooks` -- its extension points (logging, checkpoints, evaluation, yours).
* :mod:`rdd.engine.evaluator` -- :class:`~rdd.engine.evaluator.Evaluator` (multi-rank gather, devkit metrics).
* :mod:`rdd.engine.checkpoint_io` -- atomic OpenPCDet-format checkpoints, rotation, resume.
* :mod:`rdd.engine.dist` -- torchrun process groups; :mod:`rdd.engine.rng` -- seeding and RNG state capture.
* :mod:`rdd.engine.batch` -- ``load_data_to_device``; :mod:`rdd.engine.run_dir`, :mod:`rdd.engine.logging_utils`.
* :mod:`rdd.engine.cli`, :mod:`rdd.engine.train_pipeline`, :mod:`rdd.engine.test_pipeline`, :mod:`rdd.engine.demo`,
  :mod:`rdd.engine.profiling` -- what the tools run.

Submodules are imported on use (``import rdd.engine`` stays light).
"""
