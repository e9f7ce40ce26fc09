"""genai_course: the companion package of the genai-course book.

Modules, in the order the dependencies run:

- :mod:`genai_course.data` -- offline datasets (MNIST subset, digits, 2-D toys, names, the
  Python reference, folk tunes, images) with fixed stratified splits and a char tokenizer.
- :mod:`genai_course.models` -- one module per model family.
- :mod:`genai_course.budget` -- the device and the training budget chosen from it.
- :mod:`genai_course.train` -- the model-agnostic training core (:class:`~genai_course.train.Trainer`).
- :mod:`genai_course.checkpoint` -- atomic, pickle-free checkpoint files.
- :mod:`genai_course.pretrained` -- checkpoints that ship with the package.
- :mod:`genai_course.metrics` -- likelihood and sample metrics (FID, KID, precision/recall,
  class histograms, memorisation) in the digit classifier's feature space.
- :mod:`genai_course.adversarial` -- FGSM, PGD, robust accuracy, adversarial training.
- :mod:`genai_course.continual` -- learning tasks in sequence: EWC, replay, distillation.
- :mod:`genai_course.captions`, :mod:`genai_course.music`, :mod:`genai_course.style` -- the
  captions of the text-to-image chapter, folk tunes as text and sound, neural style transfer.
- :mod:`genai_course.generators` -- every shipped digit generator behind one interface, and
  the table that evaluates them all.
- :mod:`genai_course.augmentation` -- few-shot classifiers with classical or generated
  augmentation, compared in a paired experiment.
- :mod:`genai_course.recipes` -- the training recipes behind ``genai-course train``.
- :mod:`genai_course.bench` -- the benchmarks behind ``genai-course bench``.
- :mod:`genai_course.viz` -- image grids and plots; :mod:`genai_course.cli` -- ``genai-course``.
"""

__version__ = "0.1.0"
