"""genai_course: the companion package of the genai-course book.

Modules, in the order the dependencies run:

- :mod:`genai_course.data` -- offline datasets (MNIST subset, digits, 2-D toys, names, the
  Python reference, folk tunes, images) with fixed stratified splits and a char tokenizer.
- :mod:`genai_course.models` -- one module per model family.
- :mod:`genai_course.budget` -- the device and the training budget chosen from it.
- :mod:`genai_course.train` -- the model-agnostic training core (:class:`~genai_course.train.Trainer`).
- :mod:`genai_course.continual` -- learning tasks in sequence: EWC, replay, distillation.
- :mod:`genai_course.checkpoint` -- atomic, pickle-free checkpoint files.
- :mod:`genai_course.pretrained` -- checkpoints that ship with the package.
- :mod:`genai_course.viz` -- image grids and plots; :mod:`genai_course.cli` -- ``genai-course``.
"""

__version__ = "0.1.0"
