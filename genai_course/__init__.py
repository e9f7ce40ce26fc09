"""genai_course: the companion package of the genai-course book.

Modules, from the bottom of the dependency order up (each imports only from its own layer or
the layers below):

1. Input checks and building blocks, which import nothing of the package:
   :mod:`~genai_course.config` (the base of every config: ``to_dict``/``from_dict`` and one
   style of validation), :mod:`~genai_course.checks` (input checks of tensors),
   :mod:`~genai_course.checkpoint` (atomic, pickle-free files), :mod:`~genai_course.budget`
   (the device and the training budget chosen from it), :mod:`~genai_course.viz`.
2. Data and models: :mod:`~genai_course.data` (offline datasets with fixed splits,
   tokenizers, the training streams and their protocol), :mod:`~genai_course.models` (one
   module per model family; every generative model has ``sample(n, *, labels=None,
   generator=None, ...)``, likelihood models ``log_prob(x)``, language models
   ``generate(prompt_ids, *, max_new, ...)``), :mod:`~genai_course.pretrained` (the shipped
   checkpoints), :mod:`~genai_course.captions`, :mod:`~genai_course.music`,
   :mod:`~genai_course.style`, :mod:`~genai_course.adversarial`.
3. Training and measuring: :mod:`~genai_course.train` (the model-agnostic Trainer),
   :mod:`~genai_course.metrics` (likelihood units, FID/KID, precision/recall, class
   histograms in the digit classifier's feature space), :mod:`~genai_course.continual`.
4. Every shipped model in use: :mod:`~genai_course.generators` (sampling any shipped
   generator through its ``sample``; the evaluation table) and
   :mod:`~genai_course.evaluation` (the sample metrics the manifests record),
   :mod:`~genai_course.augmentation` (few-shot classifiers with generated data).
5. :mod:`~genai_course.recipes` (typed settings and the drivers behind ``genai-course
   train``), then :mod:`~genai_course.cli` (``genai-course``), with
   :mod:`~genai_course.bench` (the benchmarks and the GPU check) beside it. Nothing imports
   ``cli``.

A new model family plugs in as one module under ``models/`` with a
:class:`~genai_course.config.Config` subclass and the sampling (or ``generate``/``log_prob``)
protocol above; a shipped checkpoint adds a record to ``recipes.RECIPES`` and, for a digit
generator, a :class:`~genai_course.generators.GeneratorSpec`.
"""

__version__ = "0.1.0"
