"""FID, Inception Score and KID as formulas on features: numpy only, no device.

Math in numpy float64 (activation statistics, Frechet distance by sqrtm or by
eigendecomposition, IS over 10 splits, KID with the cubic polynomial kernel on
subsets of 1000 as in clean-fid / torch-fidelity). The features come from
features.py (the Inception on the mesh).
"""

import dataclasses
import os

import numpy as np
import scipy.linalg
import scipy.special

IS_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_REFERENCE_SIZE = 10_000  # features kept in cached stats for KID


@dataclasses.dataclass(frozen=True)
class Stats:
  """Activation statistics of one image set (mu, sigma in float64).

  `features` optionally keeps (a random subset of) the pool features for KID.
  """
  mu: np.ndarray
  sigma: np.ndarray
  num: int
  features: np.ndarray | None = None

  def save(self, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arrays = dict(mu=self.mu, sigma=self.sigma, num=np.int64(self.num))
    if self.features is not None:
      arrays['features'] = self.features
    tmp = path + '.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path):
    with np.load(path) as data:
      features = data['features'] if 'features' in data.files else None
      num = int(data['num']) if 'num' in data.files else -1
      return cls(mu=data['mu'], sigma=data['sigma'], num=num,
                 features=features)


def activation_stats(features, kid_features=KID_REFERENCE_SIZE, seed=0):
  """Mean and (ddof=1) covariance in float64; keeps <= kid_features rows."""
  features = np.asarray(features)
  as64 = features.astype(np.float64)
  kept = None
  if kid_features:
    kept = features.astype(np.float32)
    if len(kept) > kid_features:
      rows = np.random.default_rng(seed).choice(len(kept), kid_features,
                                                replace=False)
      kept = kept[np.sort(rows)]
  return Stats(mu=as64.mean(axis=0), sigma=np.cov(as64, rowvar=False),
               num=len(features), features=kept)


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps=1e-6):
  """tr(sqrtm(sigma1 @ sigma2)) as in pytorch-fid / TTUR."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():  # near-singular product: regularize
    offset = np.eye(len(sigma1)) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  return float(np.trace(covmean).real)


def _trace_sqrt_product_eig(sigma1, sigma2):
  """tr(sqrt(sigma1 sigma2)) = sum sqrt(eig(s1^1/2 sigma2 s1^1/2)), all PSD."""
  w, v = np.linalg.eigh(sigma1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  return float(np.sqrt(np.clip(inner, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, method='sqrtm'):
  """||mu1-mu2||^2 + tr(s1 + s2 - 2 (s1 s2)^1/2); method 'sqrtm' or 'eig'."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1 = np.asarray(sigma1, np.float64)
  sigma2 = np.asarray(sigma2, np.float64)
  if method == 'sqrtm':
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2)
  elif method == 'eig':
    tr_covmean = _trace_sqrt_product_eig(sigma1, sigma2)
  else:
    raise ValueError(f'Unknown FID method {method!r}')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * tr_covmean)


def fid_from_stats(stats1, stats2, method='sqrtm'):
  return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma,
                          method)


def inception_score(logits, num_splits=IS_SPLITS):
  """(mean, std) of exp(E KL(p(y|x) || p(y))) over consecutive splits.

  Pass the classifier's 'logits_unbiased' to match the original TF IS code.
  """
  logits = np.asarray(logits, np.float64)
  log_p = scipy.special.log_softmax(logits, axis=1)
  n = len(logits)
  scores = []
  for i in range(num_splits):
    part = log_p[i * n // num_splits:(i + 1) * n // num_splits]
    p = np.exp(part)
    log_marginal = np.log(p.mean(axis=0, keepdims=True))
    kl = (p * (part - log_marginal)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _mmd2_unbiased(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 (float32 dots, f64 sums)."""
  m, d = x.shape
  kernel = lambda a, b: (np.float64(1.0) + (a @ b.T) / d) ** 3
  kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
  off_diagonal = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy))
  return off_diagonal / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m)


def kernel_inception_distance(features1, features2, num_subsets=KID_SUBSETS,
                              subset_size=KID_SUBSET_SIZE, seed=0):
  """(mean, std) of unbiased MMD^2 over random subsets (clean-fid's KID)."""
  f1 = np.asarray(features1, np.float32)
  f2 = np.asarray(features2, np.float32)
  m = min(len(f1), len(f2), subset_size)
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(len(f1), m, replace=False)]
    y = f2[rng.choice(len(f2), m, replace=False)]
    values.append(_mmd2_unbiased(x, y))
  return float(np.mean(values)), float(np.std(values))


def layout_similarity(images) -> float:
  """Mean correlation, over all pairs of images, of their standardised luminance maps.

  A mode-collapse figure for spatial layout that FID does not isolate: about 0.02 for 256 of the
  shipped real images, 1.0 when every image has one layout (only colour/contrast differ).
  """
  x = np.asarray(images, np.float64)
  lum = x.mean(-1).reshape(len(x), -1)
  lum = lum - lum.mean(1, keepdims=True)
  lum /= np.sqrt((lum ** 2).mean(1, keepdims=True)) + 1e-8
  n = len(lum)
  total = lum.sum(0)  # sum over pairs i != j of <l_i, l_j> = |sum_i l_i|^2 - sum_i |l_i|^2
  pairs = (total @ total - (lum ** 2).sum()) / lum.shape[1]
  return float(pairs / (n * (n - 1)))
