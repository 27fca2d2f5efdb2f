"""Tests for vitgan_jax/evaluation/metrics.py against direct numpy computations."""

import os
import re
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from vitgan_jax.evaluation import features, metrics


def _gaussian_features(rng, n, mu, cov):
  return mu + rng.normal(size=(n, len(mu))) @ np.linalg.cholesky(cov).T


def _random_cov(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / (rank or d) + 0.1 * np.eye(d)


def _direct_fid(f1, f2):
  """The textbook formula, computed here without metrics.py."""
  mu1, mu2 = f1.mean(0), f2.mean(0)
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def test_activation_stats_are_mean_and_unbiased_covariance():
  f = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  stats = metrics.activation_stats(f, kid_features=10)
  mu = sum(row.astype(np.float64) for row in f) / len(f)
  cov = sum(np.outer(r - mu, r - mu) for r in f.astype(np.float64)) / 39
  np.testing.assert_allclose(stats.mu, mu, rtol=1e-12)
  np.testing.assert_allclose(stats.sigma, cov, rtol=1e-12)
  assert stats.mu.dtype == stats.sigma.dtype == np.float64
  assert stats.num == 40 and stats.features.shape == (10, 3)


def test_fid_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(1)
  f = _gaussian_features(rng, 500, rng.normal(size=16), _random_cov(rng, 16))
  stats = metrics.activation_stats(f)
  scale = np.trace(stats.sigma)
  for method in ('sqrtm', 'eig'):
    assert abs(metrics.fid_from_stats(stats, stats, method)) < 1e-8 * scale


def test_fid_matches_direct_scipy_computation():
  rng = np.random.default_rng(2)
  d = 24
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  cov1, cov2 = _random_cov(rng, d), _random_cov(rng, d)
  f1 = _gaussian_features(rng, 4000, mu1, cov1)
  f2 = _gaussian_features(rng, 3000, mu2, cov2)
  ours = metrics.fid_from_stats(metrics.activation_stats(f1),
                                metrics.activation_stats(f2))
  assert ours == pytest.approx(_direct_fid(f1, f2), rel=1e-6)
  # And close to the FID of the populations the samples were drawn from.
  population = metrics.frechet_distance(mu1, cov1, mu2, cov2)
  assert ours == pytest.approx(population, rel=0.05)


def test_fid_closed_form_for_commuting_covariances():
  rng = np.random.default_rng(3)
  a, b = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
  mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
  exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  for method in ('sqrtm', 'eig'):
    fid = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method)
    assert fid == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize('n,d', [(400, 32), (50, 64)])  # full rank, singular
def test_sqrtm_and_eig_formulas_agree(n, d):
  rng = np.random.default_rng(4)
  s1 = metrics.activation_stats(rng.normal(size=(n, d)) * 2.0)
  s2 = metrics.activation_stats(rng.normal(size=(n, d)) + 0.5)
  sqrtm = metrics.fid_from_stats(s1, s2, 'sqrtm')
  eig = metrics.fid_from_stats(s1, s2, 'eig')
  assert eig == pytest.approx(sqrtm, rel=1e-6)


def _direct_inception_score(logits, splits):
  scores = []
  n = len(logits)
  for k in range(splits):
    part = logits[k * n // splits:(k + 1) * n // splits]
    p = np.exp(part) / np.exp(part).sum(1, keepdims=True)
    p_y = p.mean(0)
    kl = [sum(pi[c] * np.log(pi[c] / p_y[c]) for c in range(len(p_y)))
          for pi in p]
    scores.append(np.exp(np.mean(kl)))
  return np.mean(scores), np.std(scores)


@pytest.mark.parametrize('n', [50, 53])
def test_inception_score_matches_direct_computation(n):
  logits = np.random.default_rng(5).normal(size=(n, 7)) * 3
  mean, std = metrics.inception_score(logits, num_splits=10)
  expected_mean, expected_std = _direct_inception_score(logits, 10)
  assert mean == pytest.approx(expected_mean, rel=1e-10)
  assert std == pytest.approx(expected_std, rel=1e-8)


def test_inception_score_limits():
  assert metrics.inception_score(np.zeros((20, 5)), 2)[0] == pytest.approx(1)
  confident = np.tile(np.eye(5) * 100.0, (4, 1))  # each class equally often
  assert metrics.inception_score(confident, 2)[0] == pytest.approx(5, rel=1e-6)


def _direct_mmd2(x, y):
  d = x.shape[1]
  k = lambda a, b: (a @ b / d + 1) ** 3
  m = len(x)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_matches_direct_computation():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(12, 5)).astype(np.float32)
  y = (rng.normal(size=(12, 5)) + 0.3).astype(np.float32)
  # Subsets as large as the sets: every subset is a permutation of the sets.
  mean, std = metrics.kernel_inception_distance(x, y, num_subsets=3)
  assert mean == pytest.approx(_direct_mmd2(x.astype(np.float64),
                                            y.astype(np.float64)), rel=1e-5)
  assert std < 1e-6 * abs(mean)


def test_kid_subsets_near_zero_for_same_distribution():
  rng = np.random.default_rng(7)
  same = metrics.kernel_inception_distance(
      rng.normal(size=(300, 8)), rng.normal(size=(300, 8)),
      num_subsets=20, subset_size=100)
  shifted = metrics.kernel_inception_distance(
      rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 1.0,
      num_subsets=20, subset_size=100)
  assert abs(same[0]) < 3 * same[1] + 1e-3
  assert shifted[0] > 20 * abs(same[0]) + 0.1


# ----------------------------------------------------------------------------
# Extraction plumbing, with a tiny stand-in for the Inception network.


class TinyFeatures(nn.Module):
  """Per-image channel means and a linear 'classifier': cheap and exact."""

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    pool = jnp.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], -1)
    logits = pool @ self.param('w', nn.initializers.ones, (6, 4))
    return {'pool': pool, 'logits_unbiased': logits}


def _tiny_numpy(images):
  x = images.astype(np.float64)
  return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], -1)


def _tiny_extractor(batch_size=4):
  return features.FeatureExtractor({'w': np.ones((6, 4), np.float32)},
                                  batch_size=batch_size, model=TinyFeatures())


def _images(seed, n, size=8):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3),
                                              np.uint8)


def test_extractor_batches_pads_and_keeps_order():
  images = _images(0, 11)
  out = _tiny_extractor(batch_size=4)(images)  # 3 batches, last one padded
  np.testing.assert_allclose(out['pool'], _tiny_numpy(images), rtol=1e-5)
  assert out['logits_unbiased'].shape == (11, 4)
  chunks = [images[:3], _images(1, 5, size=6)]  # an iterable of batches
  out = _tiny_extractor(batch_size=4)(chunks)
  expected = np.concatenate([_tiny_numpy(c) for c in chunks])
  np.testing.assert_allclose(out['pool'], expected, rtol=1e-5)


def test_batch_size_is_bounded_by_free_memory_and_a_multiple_of_the_shards():
  mib = 2 ** 20
  fit = lambda requested, shards, free: features.fitting_batch_size(  # noqa: E731
      requested, shards, per_image_bytes=40 * mib, available_bytes=free, fraction=0.5)
  assert fit(500, 1, 64 * 1024 * mib) == 500          # plenty of memory: the config's number
  assert fit(500, 1, 4 * 1024 * mib) == 51            # 2 GiB usable / 40 MiB per image
  assert fit(500, 8, 4 * 1024 * mib) == 48            # ... rounded down to the 8 shards
  assert fit(500, 8, 100 * mib) == 8                  # never below one image per shard
  assert fit(6, 4, 64 * 1024 * mib) == 8              # rounded up, as FeatureExtractor does
  assert features.available_memory_bytes() > 0         # CPU: the host's available RAM
  assert features.fitting_batch_size(10 ** 9) < 10 ** 9


def test_compute_fid_extractor_fits_the_memory_too(monkeypatch):
  monkeypatch.setattr(features, 'available_memory_bytes', lambda device=None: 2 ** 30)
  extractor = features.make_feature_extractor({'w': np.ones((6, 4), np.float32)}, batch_size=200)
  assert extractor.batch_size == int(2 ** 29 // features.INCEPTION_BYTES_PER_IMAGE) < 200


def test_progress_lines_every_tenth_with_rate_and_eta():
  lines = []
  progress = features.Progress('FID samples', 100, quiet_s=0, out=lines.append)
  for _ in range(20):
    progress.update(5)
  assert len(lines) == 10 and lines[-1].startswith('FID samples: 100% (100/100 images)')
  assert 'images/s' in lines[0] and 'ETA' in lines[0] and lines[0].startswith('FID samples: 10%')
  quiet = []
  progress = features.Progress('x', 100, quiet_s=3600, out=quiet.append)
  progress.update(100)
  assert not quiet  # a short job says nothing
  lines = []
  out = _tiny_extractor(batch_size=4)(_images(0, 11), progress=features.Progress(
      'features', 11, quiet_s=0, out=lines.append))
  assert len(out['pool']) == 11 and lines[-1].startswith('features: 100% (11/11 images)')


def test_extractor_shards_over_several_devices():
  script = textwrap.dedent('''
      import numpy as np
      from tests.evaluation.test_metrics import TinyFeatures, _tiny_numpy
      from vitgan_jax.evaluation import features, metrics
      import jax
      assert len(jax.devices()) == 4
      ex = features.FeatureExtractor({'w': np.ones((6, 4), np.float32)},
                                    batch_size=6, model=TinyFeatures())
      assert ex.batch_size == 8  # rounded up to a multiple of the mesh
      images = np.random.default_rng(0).integers(0, 256, (13, 5, 5, 3))
      out = ex(images.astype(np.uint8))
      np.testing.assert_allclose(out['pool'], _tiny_numpy(images), rtol=1e-5)
      print('ok')
  ''')
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=root)
  result = subprocess.run([sys.executable, '-c', script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.stdout.strip().endswith('ok'), result.stderr[-2000:]


def test_compute_fid_reads_folders_like_arrays(tmp_path):
  images = _images(2, 9)
  for i, image in enumerate(images):
    Image.fromarray(image).save(tmp_path / f'{i:03d}.png')
  Image.fromarray(_images(3, 1, size=5)[0]).save(tmp_path / 'zz_other.png')
  batches = list(features.iterate_folder(str(tmp_path), batch_size=4))
  assert [b.shape[:3] for b in batches] == [(4, 8, 8), (4, 8, 8), (1, 8, 8),
                                            (1, 5, 5)]
  np.testing.assert_array_equal(np.concatenate(batches[:3]), images)

  extractor = _tiny_extractor()
  other = _images(4, 12)
  folder_fid = features.compute_fid(str(tmp_path), other, extractor)
  with_extra = np.concatenate([_tiny_numpy(images),
                               _tiny_numpy(_images(3, 1, size=5))])
  expected = _direct_fid(with_extra, _tiny_numpy(other))
  assert folder_fid == pytest.approx(expected, rel=1e-6)
  assert features.compute_fid(other, other, extractor) == pytest.approx(
      0, abs=1e-6)


def test_compute_fid_on_stats_needs_no_weights(tmp_path, monkeypatch):
  def no_weights(*args, **kwargs):
    raise AssertionError('weights loaded although only stats were given')

  monkeypatch.setattr(features, 'make_feature_extractor', no_weights)
  rng = np.random.default_rng(8)
  s1 = metrics.activation_stats(rng.normal(size=(50, 4)))
  s2 = metrics.activation_stats(rng.normal(size=(60, 4)))
  s2.save(str(tmp_path / 's2.npz'))
  assert features.compute_fid(s1, str(tmp_path / 's2.npz')) == pytest.approx(
      metrics.frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma))


def test_reference_stats_computed_once_then_cached(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(features, 'PROGRESS_QUIET_SECONDS', 0.0)  # as if slow: progress shown
  calls = []

  def images_fn():
    calls.append(1)
    return iter([_images(5, 7), _images(6, 7)])

  kwargs = dict(dataset='cifar10', split='train', resolution=8,
                num_samples=10, extractor=_tiny_extractor(),
                cache_dir=str(tmp_path))
  first = features.reference_stats(images_fn, **kwargs)
  path = features.reference_stats_path('cifar10', 'train', 8, 10, str(tmp_path))
  # Said before the (once ~10 silent minutes long) computation, then its progress.
  said = capsys.readouterr().out.splitlines()
  assert said[0] == f'Computing FID reference statistics of 10 images (once; cached in {path}) ...'
  assert said[1:] and all(re.fullmatch(r'reference statistics: \d+% \(\d+/10 images\), '
                                       r'[\d.]+ images/s, ETA \d+ s', line) for line in said[1:])
  assert said[-1].startswith('reference statistics: 100% (10/10 images)'), said
  second = features.reference_stats(images_fn, **kwargs)
  assert capsys.readouterr().out == ''  # cached: nothing to say
  assert len(calls) == 1 and first.num == 10
  assert os.path.exists(path) and 'cifar10-train-8px-10' in path
  np.testing.assert_array_equal(first.sigma, second.sigma)
  used = np.concatenate([_images(5, 7), _images(6, 3)])
  np.testing.assert_allclose(first.mu, _tiny_numpy(used).mean(0), rtol=1e-6)


def test_evaluate_generator_against_reference(tmp_path):
  calls = []

  def sample_fn(rng, n):
    calls.append(n)
    seed = int(jax.random.randint(rng, (), 0, 2**30))
    return _images(seed, n)

  extractor = _tiny_extractor(batch_size=4)
  reference = features.compute_stats(_images(7, 30), extractor)
  reference.save(str(tmp_path / 'ref.npz'))
  rng = jax.random.key(0)
  results = features.evaluate_generator(sample_fn, 10, rng,
                                       str(tmp_path / 'ref.npz'), extractor)
  assert calls == [4, 4, 4]  # fixed batch size; surplus of the last dropped
  assert set(results) == {'fid', 'kid', 'kid_std', 'is', 'is_std'}
  generated = features.generated_features(sample_fn, 10, rng, extractor)
  assert len(generated['pool']) == 10
  expected = _direct_fid(generated['pool'].astype(np.float64),
                         _tiny_numpy(_images(7, 30)))
  assert results['fid'] == pytest.approx(expected, rel=1e-6)
  assert results['is'] == pytest.approx(
      metrics.inception_score(generated['logits_unbiased'])[0])


# ----------------------------------------------------------------------------
# Real weights (skipped unless present).


def test_fid_real_halves_small_vs_noise(real_params, real_images):
  """Two disjoint random real subsets score far lower than real vs uniform noise.

  The file is sorted by class, so the subsets are drawn from a permutation:
  its first and last rows would compare apples with bottles (measured 219 at
  n=192). Measured here at n=128: real 159, noise 457; n=128 << 2048 feature
  dimensions biases FID upwards, hence the loose absolute bound.
  """
  extractor = features.FeatureExtractor(real_params, batch_size=64)
  n = 128
  order = np.random.default_rng(0).permutation(len(real_images))
  first, second = real_images[order[:n]], real_images[order[n:2 * n]]
  noise = np.random.default_rng(0).integers(0, 256, first.shape, np.uint8)
  real_stats = features.compute_stats(first, extractor)
  fid_real = features.compute_fid(real_stats, second, extractor)
  fid_noise = features.compute_fid(real_stats, noise, extractor)
  assert fid_real < 0.4 * fid_noise
  assert fid_real < 200


def test_layout_similarity_against_pairwise_corrcoef():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (7, 6, 5, 3)).astype(np.uint8)
  lum = images.astype(np.float64).mean(-1).reshape(7, -1)
  pairs = [np.corrcoef(lum[i], lum[j])[0, 1] for i in range(7) for j in range(7) if i != j]
  assert metrics.layout_similarity(images) == pytest.approx(np.mean(pairs), rel=1e-6)


def test_layout_similarity_of_one_layout_is_one_and_of_noise_near_zero():
  rng = np.random.default_rng(1)
  layout = rng.normal(size=(16, 16, 1))
  # One layout under different colour gains and offsets: luminance correlation 1.
  same = layout * rng.uniform(0.5, 2, (20, 1, 1, 3)) + rng.normal(size=(20, 1, 1, 3))
  assert metrics.layout_similarity(same) == pytest.approx(1.0, abs=1e-6)
  noise = rng.normal(size=(200, 16, 16, 3))
  assert abs(metrics.layout_similarity(noise)) < 0.01
