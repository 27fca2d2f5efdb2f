"""bench/learning_curve.py: the rows build, the summary's arithmetic, the plot.

The benchmark itself trains for minutes per row with the real FID Inception (README
'Training health'); here only what can be checked without it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import common, learning_curve
from vitgan_jax import models


@pytest.mark.parametrize('row', learning_curve.ROWS)
def test_rows_swap_only_the_discriminator(row):
  base = common.load_config('configs/vitgan_mini.py')
  config = learning_curve.row_config(base, row)
  assert config.model.generator == base.model.generator
  assert config.training == base.training and config.optimizer == base.optimizer
  d = models.build_discriminator(config.model)
  variables = d.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  assert d.apply(variables, jnp.zeros((2, 32, 32, 3))).shape == (2,)
  if row == 'vanilla':
    dc = config.model.discriminator
    assert (dc.attention, dc.spectral_norm, dc.overlap) == ('dot', 'sn', 0)
    assert config.loss.r1_gamma > 0
  if row == 'stylegan2':
    assert config.model.discriminator.channel_max == learning_curve.STYLEGAN2_CHANNELS
    assert config.loss.r1_gamma > 0


def test_unknown_row_is_refused():
  with pytest.raises(ValueError, match='unknown row'):
    learning_curve.row_config(common.load_config('configs/vitgan_mini.py'), 'biggan')


def test_summary_figures():
  curve = [{'step': s, 'train_seconds': t, 'fid': f} for s, t, f in
           [(0, 0, 400.0), (100, 300, 300.0), (200, 600, 250.0), (300, 900, 220.0),
            (400, 1200, 190.0)]]
  diagnostics = [{'step': s, 'd_gap': g, 'd_sensitivity': 1.0} for s, g in
                 [(400, 0.5), (500, 0.2), (600, -0.1), (700, 0.3)]]
  s = learning_curve.summarize(curve, diagnostics, batch_size=32)
  assert (s['fid_start'], s['fid_end'], s['fid_best']) == (400.0, 190.0, 190.0)
  assert s['images_seen'] == 400 * 32
  # Last quarter: the points from 15 min on plus the one before: (10, 250), (15, 220), (20, 190).
  expected = np.polyfit([10.0, 15.0, 20.0], [250.0, 220.0, 190.0], 1)[0]
  assert s['fid_slope_last_quarter_per_min'] == pytest.approx(expected)
  assert s['still_falling_last_quarter']
  assert s['d_gap_min_after_500_steps'] == -0.1
  assert s['d_gap_positive_fraction_after_500_steps'] == pytest.approx(2 / 3)
  assert not s['targets_met']  # FID 400 -> 190 halves, but the gap dipped below zero


def test_a_last_quarter_that_ends_higher_is_not_falling():
  # The fitted slope over the last quarter is negative, pulled down by its middle points.
  curve = [{'step': s, 'train_seconds': t, 'fid': f} for s, t, f in
           [(0, 0, 400.0), (100, 300, 300.0), (200, 600, 250.0), (300, 900, 150.0),
            (330, 1000, 140.0), (370, 1100, 145.0), (400, 1200, 255.0)]]
  diagnostics = [{'step': 600, 'd_gap': 0.5, 'd_sensitivity': 1.0}]
  s = learning_curve.summarize(curve, diagnostics, batch_size=32)
  assert s['fid_slope_last_quarter_per_min'] < 0
  assert not s['still_falling_last_quarter'] and not s['targets_met']
  curve[-1]['fid'] = 140.0
  s = learning_curve.summarize(curve, diagnostics, batch_size=32)
  assert s['still_falling_last_quarter'] and s['targets_met']


def test_parse_value():
  assert learning_curve.parse_value('3') == 3
  assert learning_curve.parse_value('0.5') == 0.5
  assert learning_curve.parse_value('False') is False
  assert learning_curve.parse_value('l2') == 'l2'


def test_plot_writes_a_png(tmp_path):
  rows = [{'row': 'vitgan',
           'curve': [{'images_seen': 0, 'fid': 400.0}, {'images_seen': 3200, 'fid': 300.0}],
           'diagnostics': [{'images_seen': 3200, 'd_gap': 0.5}]}]
  path = tmp_path / 'curve.png'
  learning_curve.plot(rows, str(path), 'title')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


class _PixelFeatures:
  """A stand-in for the FID Inception: a fixed random projection of the pixels."""
  batch_size = 16

  def __init__(self):
    self.projection = np.random.default_rng(0).normal(size=(8 * 8 * 3, 6))

  def __call__(self, batches, progress=None):
    images = np.concatenate([np.asarray(b, np.float64) for b in batches])
    return {'pool': images.reshape(len(images), -1) @ self.projection / 255.0}


def test_real_floor_is_zero_for_the_whole_set_and_positive_for_a_subset():
  images = np.random.default_rng(1).integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
  extractor = _PixelFeatures()
  reference = learning_curve.features.compute_stats(images, extractor)
  whole = learning_curve.subset_fids(images, reference, extractor, 60, seeds=(0, 1))
  assert whole == pytest.approx([0.0, 0.0], abs=1e-6)  # every image, in any order: same stats
  part = learning_curve.subset_fids(images, reference, extractor, 20, seeds=(0, 1, 0))
  assert min(part) > 0.01 and part[0] == part[2] and part[0] != part[1]


def test_fid_sample_counts_extrapolates_through_the_two_largest_counts():
  """FID_N = FID_inf + k/N through the two largest counts; each FID is of the first n rows."""
  from bench import fid_sample_counts
  from vitgan_jax.evaluation import metrics
  assert fid_sample_counts.counts_up_to(2000) == [250, 500, 1000, 2000]
  assert fid_sample_counts.counts_up_to(600) == [250, 500, 600]
  rng = np.random.default_rng(0)
  pool = rng.normal(size=(1000, 8)) + 0.5
  reference = metrics.activation_stats(rng.normal(size=(3000, 8)), kid_features=None)
  fids, fid_inf = fid_sample_counts.fid_at_counts(pool, reference, [250, 500, 1000])
  mu, sigma = pool[:500].mean(0), np.cov(pool[:500], rowvar=False)
  assert fids[500] == pytest.approx(
      metrics.frechet_distance(mu, sigma, reference.mu, reference.sigma), rel=1e-6)
  k = (fids[500] - fids[1000]) / (1 / 500 - 1 / 1000)
  assert fid_inf == pytest.approx(fids[1000] - k / 1000, rel=1e-9)
  # Samples of the reference distribution itself: FID is bias only, ~1/N, and extrapolates to ~0.
  same = rng.normal(size=(1000, 64))
  reference = metrics.activation_stats(rng.normal(size=(20000, 64)), kid_features=None)
  fids, fid_inf = fid_sample_counts.fid_at_counts(same, reference, [250, 500, 1000])
  assert fids[250] > fids[500] > fids[1000] > 3 * abs(fid_inf)
