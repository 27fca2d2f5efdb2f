"""FID / IS / KID with the standard TF-Inception network, in JAX."""

from vitgan_jax.evaluation.inception import InceptionV3
from vitgan_jax.evaluation.metrics import activation_stats
from vitgan_jax.evaluation.metrics import compute_fid
from vitgan_jax.evaluation.metrics import compute_stats
from vitgan_jax.evaluation.metrics import evaluate_generator
from vitgan_jax.evaluation.metrics import data_mesh
from vitgan_jax.evaluation.metrics import FeatureExtractor
from vitgan_jax.evaluation.metrics import fid_from_stats
from vitgan_jax.evaluation.metrics import frechet_distance
from vitgan_jax.evaluation.metrics import generated_features
from vitgan_jax.evaluation.metrics import inception_score
from vitgan_jax.evaluation.metrics import kernel_inception_distance
from vitgan_jax.evaluation.metrics import make_feature_extractor
from vitgan_jax.evaluation.metrics import reference_stats
from vitgan_jax.evaluation.metrics import reference_stats_path
from vitgan_jax.evaluation.metrics import Stats
from vitgan_jax.evaluation.weights import load_inception_params
