"""Smoke tests of bench/: each benchmark's --quick mode runs and writes sane JSON.

Not timed pass/fail tests. The benchmarks run as subprocesses (as on a device) sharing one
persistent compilation cache, so the tiny train step compiles once; FID parts use the 'tiny'
feature net (Inception at 299x299 and a 2048x2048 sqrtm take minutes on a 2-core CPU).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT

from bench import common, make_table, merge_results, pack_inception


@pytest.fixture(scope='module')
def bench_env(tmp_path_factory):
  cache = tmp_path_factory.mktemp('jax_cache')
  return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              XLA_FLAGS='--xla_backend_optimization_level=0',  # faster CPU compiles
              PYTHONPATH=REPO_ROOT)


def run_bench(script, args, env, out):
  proc = subprocess.run([sys.executable, '-m', f'bench.{script}', '--quick',
                         '--out', str(out), *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


def check_header(result, benchmark):
  assert result['benchmark'] == benchmark
  assert result['quick'] is True
  assert result['is_cpu_result'] is True
  assert result['device']['platform'] == 'cpu'
  assert result['device']['peak_bf16_flops_per_device'] is None
  assert result['versions']['jax'] and result['versions']['flax']


@pytest.fixture(scope='module')
def throughput(bench_env, tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'train_throughput.json'
  return run_bench('train_throughput', ['--batch_sizes', '16', '--steps', '2',
                                           '--repeats', '2', '--warmup', '1',
                                           '--trace', str(out.parent / 'trace')], bench_env, out)


def test_train_throughput_quick(throughput):
  check_header(throughput, 'train_throughput')
  (point,) = throughput['points']
  assert (point['variant'], point['batch_size'], point['dtype']) == ('smoke', 16, 'float32')
  assert 'error' not in point and 'skipped' not in point
  seconds = point['ms_per_step'] / 1e3
  assert seconds > 0 and point['compile_seconds'] > 0 and point['lower_seconds'] > 0
  assert point['images_per_second'] == pytest.approx(16 / seconds)
  assert point['flops_per_step'] > 0
  assert point['flops_per_image'] == pytest.approx(point['flops_per_step'] / 16)
  assert point['achieved_tflops'] == pytest.approx(point['flops_per_step'] / seconds / 1e12)
  assert point['mfu'] is None  # no peak rate for a CPU
  assert point['recompiles_after_first_step'] == 0 and point['jit_cache_size'] == 1
  assert point['finite'] is True
  assert point['device_memory']['peak_bytes_in_use'] is None  # CPU: no allocator stats
  assert point['xla_memory']['estimated_step_bytes'] > 0
  assert len(point['ms_per_step_repeats']) == 2
  assert point['kernel_times']['steps'] == 5   # traced after the timing; a CPU trace has no
  assert point['kernel_times']['traced_wall_ms_per_step'] > 0   # device planes to read


def test_fid_speed_quick(bench_env, tmp_path):
  result = run_bench('fid_speed', ['--inception_weights', 'tiny', '--num_samples', '48',
                                      '--batch_size', '16', '--inception_images', '32',
                                      '--reference_images', '64'], bench_env,
                     tmp_path / 'fid.json')
  check_header(result, 'fid_speed')
  assert result['settings']['inception_weights'] == 'tiny'
  assert result['generate']['images'] == 48 and result['generate']['images_per_second'] > 0
  (inception,) = result['inception']
  assert inception['images'] == 32 and inception['images_per_second'] > 0
  (e2e,) = result['e2e']
  assert e2e['num_samples'] == 48
  parts = e2e['features_seconds'] + e2e['stats_seconds'] + e2e['frechet_sqrtm_seconds']
  assert e2e['total_seconds'] == pytest.approx(parts)
  # The two Frechet-distance methods compute the same number.
  assert math.isfinite(e2e['fid_sqrtm']) and e2e['fid_sqrtm'] > 0
  assert e2e['fid_eig'] == pytest.approx(e2e['fid_sqrtm'], rel=1e-3)


def test_learning_curve_part_merges_and_renders(throughput, tmp_path):
  """run_all.sh's third part is bench/learning_curve.py (the library's trainer); its JSON merges
  with the others and make_table renders each row's FID curve, labelled as CPU."""
  part = {**{k: throughput[k] for k in merge_results.SHARED_KEYS}, 'benchmark': 'learning_curve',
          'settings': {'config': 'configs/smoke.py', 'fid_samples': 32,
                       'fid_reference': 'all 24 images', 'meaning': 'a plumbing check'},
          'rows': [{'row': 'vitgan', 'config': {'training': {'batch_size': 16}},
                    'curve': [{'step': 0, 'images_seen': 0, 'train_seconds': 0.0, 'fid': 9.0},
                              {'step': 50, 'images_seen': 800, 'train_seconds': 30.0,
                               'fid': 7.5}],
                    'summary': {'images_seen': 800, 'train_seconds': 30.0}}]}
  out = tmp_path / 'learning_curve.json'
  common.write_json(part, str(out))
  merged_path = tmp_path / 'merged.json'
  merge_results.main([str(out), '--out', str(merged_path)])
  with open(merged_path) as f:
    merged = json.load(f)
  assert merged['label'].startswith('CPU results')
  text = make_table.render(merged)
  assert '**CPU results**' in text and '| training min | images seen | FID |' in text
  assert '| 0.5 | 800 | 7.50 |' in text and 'row vitgan (configs/smoke.py, batch 16' in text


def test_make_table_throughput_rows(throughput, tmp_path):
  merged = merge_results.merge([throughput])
  lines = make_table.throughput_table(merged['train_throughput'])
  assert lines[0].startswith('| config |') and len(lines) == 3
  assert '| smoke | l2 | float32 | 16 |' in lines[2]


def test_no_tensorflow_or_clu_on_the_benchmark_path():
  code = ("import sys\n"
          "for m in ('tensorflow', 'tensorflow_datasets', 'clu'): sys.modules[m] = None\n"
          "import bench.train_throughput, bench.fid_speed, bench.learning_curve\n"
          "import bench.pack_inception, bench.profile_step, bench.make_table\n")
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize('kind, expected', [
    ('NVIDIA H100 80GB HBM3', 989e12), ('NVIDIA H100 PCIe', 756e12), ('NVIDIA H200', 989e12),
    ('NVIDIA A100-SXM4-40GB', 312e12), ('TPU v4', 275e12), ('TPU v5 lite', 197e12),
    ('cpu', None)])
def test_peak_flops_table(kind, expected):
  assert common.peak_flops(kind)[0] == expected


def test_flops_of_counts_a_matmul():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  lowered = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 16)), jnp.ones((16, 4)))
  assert common.flops_of(lowered) == 2 * 8 * 16 * 4


def test_pack_inception_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  params = {'Conv2d_1a_3x3': {'kernel': rng.normal(size=(3, 3, 3, 32)).astype(np.float32),
                              'mean': rng.normal(size=32).astype(np.float32),
                              'var': rng.uniform(0.5, 2, 32).astype(np.float32)},
            'fc': {'kernel': rng.normal(size=(8, 4)).astype(np.float32),
                   'bias': rng.normal(size=4).astype(np.float32)}}
  flat = pack_inception.pack(params)
  assert flat['Conv2d_1a_3x3/kernel'].dtype == np.float16
  assert flat['fc/bias'].dtype == np.float32
  path = str(tmp_path / 'packed.npz')
  np.savez(path, **flat)
  loaded, label, model = common.load_inception(path)
  assert label == 'float16-packed' and model is None
  for name in ('Conv2d_1a_3x3', 'fc'):
    kernel = loaded[name]['kernel']
    assert kernel.dtype == np.float32
    original = params[name]['kernel']
    # float16 keeps 11 significant bits: relative rounding error at most 2^-11.
    assert np.all(np.abs(kernel - original) <= np.abs(original) * 2.0 ** -11)
  np.testing.assert_array_equal(loaded['Conv2d_1a_3x3']['var'], params['Conv2d_1a_3x3']['var'])


def test_memory_plan_grows_with_the_batch(tmp_path):
  from bench import memory_plan  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'memory_plan.json'
  memory_plan.main(['--configs', 'configs/smoke.py', '--batch_sizes', '2,16', '--out', str(out),
                    '--set', 'augment.policy=translation', '--set', 'loss.bcr_real=0.0',
                    '--set', 'loss.bcr_fake=0.0'])  # a smaller step: quicker to compile
  with open(out) as f:
    result = json.load(f)
  assert result['benchmark'] == 'memory_plan' and result['is_cpu_result'] is True
  assert result['overrides']['augment.policy'] == 'translation'
  small, large = result['points']
  assert small['train_state_bytes'] == large['train_state_bytes'] > 0
  assert large['xla_memory']['temp_size_in_bytes'] > small['xla_memory']['temp_size_in_bytes']
  assert large['estimated_step_gib'] > small['estimated_step_gib'] > 0


def test_eval_memory_records_peak_rss_per_batch_size(tmp_path):
  from bench import eval_memory  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'eval_memory.json'
  eval_memory.main(['--batch_sizes', '2,4', '--num_samples', '4', '--weights', 'tiny',
                    '--out', str(out)])
  with open(out) as f:
    result = json.load(f)
  assert result['benchmark'] == 'eval_memory' and result['is_cpu_result'] is True
  points = result['points']
  assert [p['batch_size'] for p in points] == [2, 4] and all('error' not in p for p in points)
  for p in points:
    assert p['peak_rss_bytes'] >= p['rss_after_reference_stats_bytes'] >= (
        p['rss_before_eval_bytes']) >= p['rss_after_imports_bytes'] > 0  # a running maximum
    assert p['peak_vmhwm_bytes'] > 0
    assert p['weights'] == 'tiny' and 'fid' in p  # of 4 samples: any number (even NaN)
  assert isinstance(result['per_image_bytes'], float)  # ~0 for the tiny net


def test_throughput_sweep_specs():
  """The full sweep parses, starts at the paper batch in bf16, and drops cuDNN points off a GPU;
  a cross product puts the paper batch first."""
  from bench import train_throughput as tt
  full = tt.make_points(tt.FULL_SWEEP, 'gpu')
  assert len(full) == len(tt.FULL_SWEEP) and len({p.name for p in full}) == len(full)
  assert (full[0].variant, full[0].batch_size, full[0].dtype) == ('cifar10', 128, 'bfloat16')
  on_cpu = tt.make_points(tt.FULL_SWEEP, 'cpu')
  assert on_cpu and all(p.attention_impl == 'xla' for p in on_cpu)
  assert tt.cross_product(['smoke'], [64, 128], ['float32', 'bfloat16'], ['xla']) == [
      'smoke/128/bfloat16/xla', 'smoke/128/float32/xla', 'smoke/64/bfloat16/xla',
      'smoke/64/float32/xla']
  with pytest.raises(ValueError, match='variant/batch/dtype/impl'):
    tt.parse_point('cifar10/128/bfloat16')
  with pytest.raises(ValueError, match='variant/batch/dtype/impl'):
    tt.parse_point('nope/128/bfloat16/xla')
  for name in tt.VARIANTS:  # every variant's overrides name real config fields
    common.load_config(*tt.VARIANTS[name])


def test_make_table_kernel_lines_group_library_kernels():
  times = {'total_ms': 20.0, 'events': 40, 'steps': 2, 'by_kind': [
      ['gemm_fusion_dot', 8.0, 0.4, 10], ['nvjet_sm90_tss_192x96', 5.0, 0.25, 4],
      ['nvjet_sm90_tst_128x160', 5.0, 0.25, 4], ['input_reduce_fusion', 4.0, 0.2, 22]]}
  part = {'points': [{'variant': 'cifar10', 'batch_size': 128, 'dtype': 'bfloat16',
                      'kernel_times': times}]}
  lines = make_table.kernel_lines(part)
  assert '10.00 ms of kernels per step, 20 kernel launches per step' in lines[0]
  rows = [line for line in lines if line.startswith('| `')]
  assert rows[0] == '| `cuBLAS GEMM (nvjet_*, ...)` | 5.00 | 50.0% | 4 |'  # 10 ms, 8 launches
  assert rows[1].startswith('| `gemm_fusion_dot` | 4.00 | 40.0% | 5 |')
  assert len(rows) == 3


def test_traced_steps_keep_the_warm_up_out_of_the_trace(tmp_path, monkeypatch):
  """Kernel times and wall time cover the same `steps` steps: the warm-up runs untraced."""
  import contextlib  # pylint: disable=g-import-not-at-top
  from bench import profile_step  # pylint: disable=g-import-not-at-top
  calls, traced = [], []

  def step(state, batch):
    calls.append(state)
    return state + batch, {'loss': state}

  @contextlib.contextmanager
  def fake_trace(trace_dir):
    start = len(calls)
    yield
    traced.append((trace_dir, len(calls) - start))

  monkeypatch.setattr(profile_step.jax.profiler, 'trace', fake_trace)
  monkeypatch.setattr(profile_step, 'kernel_times', lambda d, top: {'total_ms': 6.0})
  times = profile_step.traced_steps(step, 0, 1, 3, str(tmp_path))
  assert calls == [0, 1, 2, 3]            # warm-up, then three steps from its state
  assert traced == [(str(tmp_path), 3)]   # only the three are traced
  assert times['steps'] == 3 and times['ms_per_step'] == 2.0
  assert times['traced_wall_ms_per_step'] >= 0
  monkeypatch.setattr(profile_step, 'kernel_times', lambda d, top: None)  # CPU: no device planes
  assert set(profile_step.traced_steps(step, 0, 1, 2, str(tmp_path))) == {
      'steps', 'traced_wall_ms_per_step'}
