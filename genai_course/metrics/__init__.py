"""Sample and likelihood metrics for generative models (chapters 03-07, 12-13, 16, 19).

What each metric measures, and what it misses:

- **Likelihood** (:func:`bits_per_dim`, :func:`bits_per_dim_dequantised`,
  :func:`bits_per_char`): the average negative
  log-likelihood of held-out data, rescaled to bits. It rewards covering all of the data and
  says nothing direct about how samples look: a model can have a good likelihood and poor
  samples, or the reverse. Only models with a (bound on the) likelihood have one; GANs do not.
- **FID** (:func:`fid`, :func:`frechet_distance`): the Fréchet distance between two Gaussians
  fitted to the features of real and generated images. One number for quality *and* diversity,
  blind to everything outside the feature network's view and to the shape of the feature
  distribution beyond its first two moments. It is biased: the same two distributions give a
  larger FID with fewer samples.
- **KID** (:func:`kid`): an unbiased estimate of the squared MMD between the feature
  distributions with a cubic polynomial kernel; its expectation does not depend on the sample
  count, so it compares models evaluated with different numbers of samples, and it comes with a
  spread over random subsets.
- **Precision and recall** (:func:`precision_recall`): the fraction of generated samples that
  fall on the real data's manifold (quality) and the fraction of real samples that fall on the
  generated manifold (coverage). They separate the two failure modes FID mixes, but depend on
  ``k`` and on the feature space.
- **Class histograms** (:func:`class_histogram`, :func:`class_histogram_kl`,
  :func:`conditional_accuracy`): what the digit classifier thinks the samples are. They detect
  missing classes (mode collapse) and a conditional model that ignores its label, but not
  blurry or unrealistic samples that the classifier still labels confidently.
- **Memorisation** (:func:`nearest_neighbour_distance`, :func:`memorisation`): the pixel
  distance from each sample to its nearest training image, read against the same distance for
  held-out real digits. A distance near 0 means a copied training image; a large one does not
  prove novelty, since pixel distance is a poor measure of similarity.
- **Mode coverage on 2-D toys** (:func:`modes_covered`): how many of the known modes of a ring
  of Gaussians the samples hit, and how many samples are near any mode.

Every sample metric depends on the number of samples: the inputs' first dimension *is* the
sample count N, and a number reported without its N cannot be compared. Even a perfect
generator does not reach FID 0 with finitely many samples; :func:`real_vs_real_floor` gives the
FID and KID between two disjoint sets of *real* digits of the same size n that the feature
network never learnt from (validation vs test; see :func:`real_pair` for why not training
digits), the floor that a generator evaluated with n samples should be compared against, and
:func:`metrics_vs_sample_size` shows how FID and KID move with n.

The image metrics work in the feature space of the course's digit classifier (chapter 02, its
128-wide penultimate layer, see :class:`FeatureSpace`), not Inception-v3: the numbers are

The modules, each with one job:

- :mod:`~genai_course.metrics.likelihood` -- bits per dimension and per character;
- :mod:`~genai_course.metrics.distances` -- Fréchet distance, FID and KID of feature sets;
- :mod:`~genai_course.metrics.features` -- the feature space, FID and KID of images, linear
  probes;
- :mod:`~genai_course.metrics.neighbours` -- precision and recall, memorisation;
- :mod:`~genai_course.metrics.coverage` -- class histograms, conditional accuracy, 2-D mode
  coverage;
- :mod:`~genai_course.metrics.sample_size` -- the real-vs-real floor and metrics against N.
"""

from __future__ import annotations

from .coverage import class_histogram, class_histogram_kl, conditional_accuracy, modes_covered
from .distances import feature_statistics, fid_from_features, frechet_distance, kid_from_features
from .features import IMAGE_SHAPE as IMAGE_SHAPE
from .features import FeatureSpace, fid, kid, linear_probe
from .likelihood import bits_per_char, bits_per_dim, bits_per_dim_dequantised
from .neighbours import memorisation, nearest_neighbour_distance, precision_recall
from .sample_size import TEST_SPLIT_SIZE as TEST_SPLIT_SIZE
from .sample_size import floor_from_features, metrics_vs_sample_size, real_pair, real_vs_real_floor

__all__ = [
    "FeatureSpace",
    "bits_per_char",
    "bits_per_dim",
    "bits_per_dim_dequantised",
    "class_histogram",
    "class_histogram_kl",
    "conditional_accuracy",
    "feature_statistics",
    "fid",
    "fid_from_features",
    "floor_from_features",
    "frechet_distance",
    "kid",
    "kid_from_features",
    "linear_probe",
    "memorisation",
    "metrics_vs_sample_size",
    "modes_covered",
    "nearest_neighbour_distance",
    "precision_recall",
    "real_pair",
    "real_vs_real_floor",
]
