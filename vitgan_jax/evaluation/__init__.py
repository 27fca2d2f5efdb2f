"""FID / IS / KID with the standard TF-Inception network, in JAX.

  inception.py, weights.py   the Flax InceptionV3 and its torch-free weight loading
  features.py                features on the mesh, stats of image sets, compute_fid, reference cache
  metrics.py                 the formulas (numpy): Frechet distance, IS, KID
  train_eval.py              the evaluator of a GAN's EMA generator (training and --mode eval)
"""

from vitgan_jax.evaluation.features import compute_fid
from vitgan_jax.evaluation.features import compute_stats
from vitgan_jax.evaluation.features import evaluate_generator
from vitgan_jax.evaluation.features import FeatureExtractor
from vitgan_jax.evaluation.features import generated_features
from vitgan_jax.evaluation.features import make_feature_extractor
from vitgan_jax.evaluation.features import reference_stats
from vitgan_jax.evaluation.features import reference_stats_path
from vitgan_jax.evaluation.inception import InceptionV3
from vitgan_jax.evaluation.metrics import activation_stats
from vitgan_jax.evaluation.metrics import fid_from_stats
from vitgan_jax.evaluation.metrics import frechet_distance
from vitgan_jax.evaluation.metrics import inception_score
from vitgan_jax.evaluation.metrics import kernel_inception_distance
from vitgan_jax.evaluation.metrics import Stats
from vitgan_jax.evaluation.weights import load_inception_params
