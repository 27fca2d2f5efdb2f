"""vitgan_jax/tpu_compile.py: the smoke step compiled by libtpu for TPU topologies, on this CPU.

Runs wherever libtpu is installed (CI installs the `tpu` extra); skipped only without it.
Three TPU compiles of the smoke train step (v3-8 at 8 and 16 images, v2-32 at 64), each about
40 s on one busy core; everything else reuses them through the report cache (a temporary
$VITGAN_CACHE for this module) or needs no compile.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import pytest

from configs import smoke
from vitgan_jax import errors, sharding, tpu_compile, tpu_env, tpu_specs

needs_libtpu = pytest.mark.skipif(not tpu_env.libtpu_installed(),
                                  reason='libtpu is not installed (pip install -e ".[tpu]")')

# The TPU's FLOPs per core against XLA's CPU cost analysis of the same step at the per-core
# batch on one CPU device (jit(...).lower(...).cost_analysis(): the step as lowered, before
# optimization; compiling it for the CPU too would cost another ~40 s). Measured for the
# smoke step: TPU / CPU = 1.134 at 2 images per core, 1.122 at 8 (and 1.09 against the
# CPU-compiled step). The two compilers count elementwise work of fused, rewritten
# programs differently; matmul FLOPs are the same math. 20% holds those and still fails on
# what the check is for: FLOPs of the global batch instead of the per-core one (x8 or x32),
# a missing backward pass (~x0.4) or a second D step (~x1.5).
FLOPS_TOLERANCE = 0.2


@pytest.fixture(scope='module', autouse=True)
def report_cache(tmp_path_factory):
  """A fresh compile-report cache for this module, so every run really compiles once."""
  old = os.environ.get('VITGAN_CACHE')
  os.environ['VITGAN_CACHE'] = str(tmp_path_factory.mktemp('vitgan_cache'))
  yield
  if old is None:
    del os.environ['VITGAN_CACHE']
  else:
    os.environ['VITGAN_CACHE'] = old


def smoke_config(batch):
  return tpu_compile.with_batch(smoke.get_config(), batch)


def train_step_report(topology, batch, search=False):
  return tpu_compile.check(smoke_config(batch), topology, which=('train step',), search=search)


def cpu_flops(config):
  """XLA's CPU cost analysis of the same train step on one CPU device."""
  mesh = sharding.create_mesh(jax.devices('cpu')[:1])
  fn, args, _ = tpu_compile.programs(config, mesh, which=('train step',))['train step']
  cost = fn.lower(*args).cost_analysis()
  return float(cost['flops'])


@needs_libtpu
@pytest.mark.parametrize('topology,batch,devices', [('v3-8', 16, 8), ('v2-32', 64, 32)])
def test_smoke_train_step_compiles_for_tpu_and_flops_match_cpu(topology, batch, devices):
  report = train_step_report(topology, batch)
  step = report.program('train step')
  assert report.topology.num_devices == devices
  assert step.flops == pytest.approx(cpu_flops(smoke_config(batch // devices)),
                                     rel=FLOPS_TOLERANCE)
  assert 0 < step.argument_bytes < step.total_bytes < report.capacity_bytes
  assert step.alias_bytes > 0  # the donated state is updated in place
  assert 'all-reduce' in step.collectives  # gradients are summed over the 'data' axis
  floor, compute, memory = report.floor_seconds()
  assert floor == max(compute, memory) > 0
  assert report.images_per_second(0.3) == pytest.approx(0.3 * report.images_per_second())
  table = tpu_compile.format_report(report)
  assert f'| train step | {batch} |' in table and 'not a measured speed' in table


@needs_libtpu
def test_hbm_grows_with_batch_and_an_oversized_batch_does_not_fit(monkeypatch):
  small = train_step_report('v3-8', 8).program('train step')
  large = train_step_report('v3-8', 16).program('train step')  # cached by the test above
  assert large.temp_bytes > small.temp_bytes
  assert large.total_bytes > small.total_bytes
  # An oversized batch. The smoke model would need ~13,000 images per core to fill a v3
  # core's 16 GiB, and compiling that takes minutes (185 s at global batch 160,000, which
  # still fit: 10.1 GiB); so the core is given an HBM between the two batches' needs.
  topology = tpu_specs.topology('v3-8')
  capacity = (small.total_bytes + large.total_bytes) / 2
  chip = dataclasses.replace(topology.chip, hbm_gib=capacity * topology.chip.devices_per_chip
                             / tpu_specs.GIB)
  monkeypatch.setitem(tpu_specs.TOPOLOGIES, 'v3-8', dataclasses.replace(topology, chip=chip))
  with pytest.raises(tpu_compile.DoesNotFitError) as e:
    train_step_report('v3-8', 16, search=True)
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith('does not fit: v3-8 ')
  assert 'the train step at global batch 16 needs' in message
  assert 'the largest global batch that fits is 8 (--config.training.batch_size=8)' in message


@needs_libtpu
def test_compiler_out_of_memory_is_parsed():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  mesh = sharding.create_mesh(tpu_compile.topology_devices(tpu_specs.topology('v3-8')))
  w = jax.ShapeDtypeStruct((4096, 4096), jnp.float32, sharding=NamedSharding(mesh, P()))
  x = jax.ShapeDtypeStruct((8 * 600_000, 4096), jnp.float32,
                           sharding=NamedSharding(mesh, P('data')))
  fn = jax.jit(lambda w, x: jax.grad(lambda w: jnp.sum(jnp.tanh(jnp.tanh(x @ w) @ w)))(w))
  with pytest.raises(tpu_compile.OutOfMemory) as e:  # 32 GiB of temporaries per core
    tpu_compile.compile_program('tiny', fn, (w, x), 8, cache=False)
  assert e.value.required > e.value.available > 8 * tpu_specs.GIB


def test_largest_fitting_batch_interpolates_on_memory():
  per_image, fixed, capacity = 3.0, 100.0, 1000.0   # fits up to 300 images
  probes = []

  def fits(b):
    probes.append(b)
    over = fixed + per_image * b - capacity
    return over <= 0, over
  largest, exact = tpu_compile.largest_fitting_batch(fits, 8, 4096, fixed + 4096 * 3 - capacity,
                                                     capacity)
  assert (largest, exact) == (296, True)
  assert len(probes) <= 4
  assert tpu_compile.largest_fitting_batch(lambda b: (False, 1.0), 8, 64, 1.0, capacity) == (0, True)


def _memory_model(used_per_batch, capacity, probes):
  def fits(b):
    probes.append(b)
    over = used_per_batch(b) - capacity
    return over <= 0, over
  return fits


def test_search_largest_needs_two_compiles_past_a_linear_start():
  fixed, per_image, capacity = 1000.0, 3.0, 100_000.0   # fits up to 33,000 images
  probes = []
  fits = _memory_model(lambda b: fixed + per_image * b, capacity, probes)
  found = tpu_compile.search_largest(fits, 64, 128, fixed + per_image * 128 - capacity,
                                     capacity, fixed_bytes=fixed)
  assert found == (32960, True)          # 32960 = 515 x 64 fits; 33024 does not
  assert probes == [32960, 33024]


@pytest.mark.parametrize('used', [
    lambda b: 5000.0 + 2.0 * b + 1e-4 * b * b,        # grows faster than linear
    lambda b: 5000.0 + 40.0 * b ** 0.8,               # grows slower (the compiler reuses more)
    lambda b: 5000.0 + 3.0 * b + (2000.0 if b > 9000 else 0.0),  # a jump in between
])
def test_search_largest_is_exact_on_curved_memory(used):
  capacity, step = 60_000.0, 8
  truth = max(b for b in range(step, 200_000, step) if used(b) <= capacity)
  probes = []
  found = tpu_compile.search_largest(_memory_model(used, capacity, probes), step, 128,
                                     used(128) - capacity, capacity, fixed_bytes=5000.0)
  assert found == (truth, True)
  assert len(probes) <= tpu_compile.MAX_SEARCH_COMPILES


def test_search_largest_gets_close_past_a_cliff():
  """What v3-8 showed: linear, then flat (the compiler rematerializes), then out of memory."""
  capacity, step = 60_000.0, 8
  used = lambda b: min(5000.0 + 10.0 * b, 57_000.0) if b <= 15_500 else 120_000.0
  probes = []
  found, exact = tpu_compile.search_largest(_memory_model(used, capacity, probes), step, 128,
                                            used(128) - capacity, capacity, fixed_bytes=5000.0)
  assert used(found) <= capacity and (exact or found >= 0.97 * 15_496)
  assert len(probes) <= tpu_compile.MAX_SEARCH_COMPILES


def test_search_largest_goes_down_from_a_start_that_does_not_fit():
  capacity = 1000.0
  probes = []
  fits = _memory_model(lambda b: 100.0 + 3.0 * b, capacity, probes)
  assert tpu_compile.search_largest(fits, 8, 512, 100.0 + 3.0 * 512 - capacity,
                                    capacity) == (296, True)
  assert all(b < 512 for b in probes)


def test_search_largest_says_when_it_ran_out_of_compiles():
  probes = []
  fits = _memory_model(lambda b: 1000.0 + 3.0 * b, 100_000.0, probes)
  found, exact = tpu_compile.search_largest(fits, 8, 128, 1384.0 - 100_000.0, 100_000.0,
                                            fixed_bytes=1000.0, max_compiles=1)
  assert not exact and found <= 33_000 and len(probes) == 1
  assert fits(found)[0]


def test_confirm_largest_finds_a_batch_that_fits_again_above_a_refusal():
  """What CelebA-64 float32 on v6e-8 showed: memory linear up to a refusal just over the
  capacity, then a cheaper plan from a larger batch on, which fits up to a second limit."""
  capacity, step = 32.0, 64
  used = lambda b: 1.0 + 0.0064 * b if b < 5500 else 0.8 + 0.0036 * b   # refused 4864..5499
  truth = max(b for b in range(step, 20_000, step) if used(b) <= capacity)   # 8640
  probes = []
  fits = _memory_model(used, capacity, probes)
  found, exact = tpu_compile.search_largest(fits, step, 128, used(128) - capacity, capacity,
                                            fixed_bytes=1.0)
  assert (found, exact) == (4800, True)          # the monotone search stops below the refusal
  refused = [b for b in probes if used(b) > capacity]
  assert tpu_compile.confirm_largest(fits, step, found, exact, capacity, refused) == (truth, True)
  assert any(b >= tpu_compile.CHECK_ABOVE * truth and used(b) > capacity for b in probes)


def test_confirm_largest_costs_one_compile_when_memory_is_linear():
  capacity, step = 100_000.0, 64
  used = lambda b: 1000.0 + 3.0 * b                               # fits up to 32,960
  probes = []
  fits = _memory_model(used, capacity, probes)
  assert tpu_compile.confirm_largest(fits, step, 32960, True, capacity, [33024]) == (32960, True)
  assert probes == [41216]                    # 1.25 x 32960 = 41200, up to a multiple of 64
  probes.clear()                              # a refusal that far up is known: no compile
  assert tpu_compile.confirm_largest(fits, step, 32960, True, capacity, [41216]) == (32960, True)
  assert tpu_compile.confirm_largest(fits, step, 32960, False, capacity, []) == (32960, False)
  assert tpu_compile.confirm_largest(fits, step, 32960, True, capacity, [33024],
                                     max_compiles=0) == (32960, False)
  assert not probes


def test_topology_names():
  assert tpu_specs.topology('v2-32').libtpu_name == 'v2:4x4'
  assert tpu_specs.topology('v2-32').num_devices == 32
  assert tpu_specs.topology('v5litepod-8') == tpu_specs.topology('v5e-8')
  assert tpu_specs.topology('v4-8').num_devices == 4  # megacore: one device per chip
  assert tpu_specs.topology('v2:4x4').name == 'v2-32'
  with pytest.raises(ValueError, match='unknown TPU topology'):
    tpu_specs.topology('v9-8')
  for chip in tpu_specs.CHIPS.values():
    assert chip.source and chip.peak_bf16_flops > 1e13 and chip.hbm_gib >= 16


def test_collectives_in_hlo_text():
  hlo = '\n'.join([
      '  %all-reduce.1 = f32[384,384]{1,0} all-reduce(f32[384,384]{1,0} %p), channel_id=1',
      '  %ars = (f32[16]{0}, f32[16]{0}) all-reduce-start(f32[16]{0} %q), channel_id=2',
      '  %ard = f32[16]{0} all-reduce-done((f32[16]{0}, f32[16]{0}) %ars)',
      '  ROOT %a2a = bf16[8,32]{1,0} all-to-all(bf16[8,32]{1,0} %r), dimensions={0}',
      '  %add = f32[4]{0} add(f32[4]{0} %x, f32[4]{0} %y)'])
  assert tpu_compile.collectives_in_hlo(hlo) == {
      'all-reduce': (2, 384 * 384 * 4 + 16 * 4), 'all-to-all': (1, 8 * 32 * 2)}


def test_without_libtpu_one_line_install_hint(monkeypatch):
  monkeypatch.setattr(tpu_env, 'libtpu_installed', lambda: False)
  with pytest.raises(errors.ConfigError) as e:
    tpu_compile.check(smoke_config(16), 'v3-8')
  assert '\n' not in str(e.value) and 'pip install -e ".[tpu]"' in str(e.value)


@needs_libtpu
def test_cpu_start_is_quiet_with_libtpu_installed():
  """libtpu in the environment adds no warnings to a CPU process (tpu_env)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(('TPU_', 'ALLOW_MULTIPLE'))}
  result = subprocess.run(
      [sys.executable, '-c', 'import vitgan_jax, jax; print(jax.devices()[0].platform)'],
      capture_output=True, text=True, env=env, timeout=120, check=True)
  assert result.stdout.strip() == 'cpu'
  assert 'TPU' not in result.stderr and 'libtpu' not in result.stderr, result.stderr


def test_readme_table_is_the_committed_json():
  """README's compile-time table is bench/tpu_compile.py's rendering of the committed JSON."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = bench_tpu.load(os.path.join(root, bench_tpu.DEFAULT_OUT))
  assert result['rows'] and all(r['fits'] for r in result['rows'])
  with open(os.path.join(root, 'README.md')) as f:
    assert bench_tpu.table(result) in f.read()


def test_bench_largest_fills_rows_already_there(tmp_path, monkeypatch):
  """--largest on a finished sweep searches each row's largest batch without recompiling it."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.chdir(root)
  out = str(tmp_path / 'sweep.json')
  row = {'config': 'configs/vitgan_cifar10.py', 'topology': 'v3-8', 'dtype': 'bfloat16',
         'requested_batch': 128, 'fits': False, 'error': 'made up'}
  bench_tpu.save({'rows': [row]}, out)
  calls = []

  def fake_largest(config, topology, per_core_step, say, probes, max_compiles):
    calls.append((config.training.batch_size, str(config.training.dtype), topology,
                  per_core_step, max_compiles))
    probes += [(4096, -1.0), (4160, 1.0), (5120, 2.0)]
    return 4096, True
  monkeypatch.setattr(bench_tpu.tpu_compile, 'largest_batch', fake_largest)
  monkeypatch.setattr(bench_tpu, 'run_one', lambda *a: pytest.fail('recompiled a done row'))
  args = ['--configs', 'configs/vitgan_cifar10.py', '--topologies', 'v3-8', '--dtypes',
          'bfloat16', '--out', out, '--largest', '--largest_compiles', '4']
  bench_tpu.main(args)
  assert calls == [(128, 'bfloat16', 'v3-8', 8, 4)]
  saved = bench_tpu.load(out)['rows'][0]
  assert (saved['largest_batch'], saved['largest_batch_exact'],
          saved['largest_batch_per_core_step']) == (4096, True, 8)
  bench_tpu.main(args)                   # already searched: nothing to do
  assert len(calls) == 1
  assert '| 4096 |' in bench_tpu.table(bench_tpu.load(out))


def test_two_sweeps_share_one_json(tmp_path):
  """Each sweep's rows and largest-batch searches survive the other's saves (one per core)."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'sweep.json')

  def row(config, **fields):
    return {'config': config, 'topology': 'v3-8', 'dtype': 'bfloat16', 'requested_batch': 128,
            'fits': True, **fields}
  bench_tpu.save({'rows': [row('a'), row('b')], 'grid': [('a', 'v3-8', 'bfloat16', 128)]}, out)
  first, second = bench_tpu.load(out), bench_tpu.load(out)   # two sweeps start from one file
  first['rows'][0]['largest_batch'] = 4096
  bench_tpu.save(first, out)
  second['rows'][1]['largest_batch'] = 2048
  second['rows'].append(row('c'))
  second['grid'].append(('c', 'v3-8', 'bfloat16', 128))
  bench_tpu.save(second, out)
  first['rows'][0]['largest_batch_exact'] = True              # the first sweep goes on
  bench_tpu.save(first, out)
  saved = {r['config']: r for r in bench_tpu.load(out)['rows']}
  assert sorted(saved) == ['a', 'b', 'c']
  assert (saved['a']['largest_batch'], saved['a']['largest_batch_exact']) == (4096, True)
  assert saved['b']['largest_batch'] == 2048 and 'largest_batch' not in saved['c']
  assert bench_tpu.load(out)['not_run'] == []
  assert sorted(map(tuple, bench_tpu.load(out)['grid'])) == [
      ('a', 'v3-8', 'bfloat16', 128), ('c', 'v3-8', 'bfloat16', 128)]


def test_refresh_recompiles_rows_of_another_commit_and_keeps_their_searches(tmp_path,
                                                                           monkeypatch):
  """--refresh recompiles only rows made at another commit, keeps their largest-batch search
  and the floor they replace; a sweep that loaded the stale rows does not put them back."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'sweep.json')
  monkeypatch.setattr(bench_tpu, '_commit', lambda: 'new')
  searched = {'largest_batch': 4096, 'largest_batch_exact': True,
              'largest_batch_per_core_step': 8, 'largest_batch_code_commit': 'old',
              'largest_batch_probes': [{'global_batch': 4096, 'gib_over_capacity': -0.5}]}

  def row(topology, commit, **fields):
    return {'config': 'configs/vitgan_cifar10.py', 'topology': topology, 'dtype': 'bfloat16',
            'requested_batch': 128, 'code_commit': commit, **fields}
  bench_tpu.save({'rows': [row('v3-8', 'old', fits=False, error='old', memory_ms=9.0,
                               **searched),
                           row('v2-32', 'new', fits=False, error='current')]}, out)
  stale = bench_tpu.load(out)                             # another sweep, loaded now
  compiled = []

  def fake_run_one(config_path, topology, batch, dtype):
    compiled.append(topology)
    return {'config': config_path, 'topology': topology, 'dtype': dtype,
            'requested_batch': batch, 'code_commit': 'new', 'compiled_at': '2026-12-05T23:00',
            'fits': False, 'error': 'refreshed'}
  monkeypatch.setattr(bench_tpu, 'run_one', fake_run_one)
  args = ['--configs', 'configs/vitgan_cifar10.py', '--topologies', 'v3-8,v2-32', '--dtypes',
          'bfloat16', '--out', out]
  bench_tpu.main(args)                                    # without --refresh: nothing compiles
  assert compiled == []
  bench_tpu.main(args + ['--refresh'])
  assert compiled == ['v3-8']                             # v2-32 is at this commit already
  stale['rows'][1]['wall_seconds'] = 1.0                  # the stale sweep saves after it
  bench_tpu.save(stale, out)
  for rows in (bench_tpu.load(out)['rows'], stale['rows']):
    saved = {r['topology']: r for r in rows}
    assert saved['v3-8']['error'] == 'refreshed'
    assert 'memory_ms' not in saved['v3-8']              # the stale compile's field is gone
    assert (saved['v3-8']['previous_code_commit'], saved['v3-8']['previous_floor_ms']) == (
        'old', None)
    assert {k: v for k, v in saved['v3-8'].items() if k.startswith('largest_batch')} == searched
    assert saved['v2-32']['error'] == 'current' and saved['v2-32']['wall_seconds'] == 1.0
  bench_tpu.main(args + ['--refresh'])                    # all at this commit now
  assert compiled == ['v3-8']
  assert '| ≥ 4096 | | new |' in bench_tpu.table(bench_tpu.load(out))


def test_out_of_memory_message_forms_and_a_search_past_one_without_numbers():
  """libtpu's 'Exceeded hbm capacity by X. Total hbm usage >= Y' form parses (v2-32 said it for
  StyleGAN2 at batch 20480); a refusal with no numbers at all makes the search bisect."""
  message = ('RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran '
             'out of memory in memory space hbm. Used 7.49G of 7.48G hbm. Exceeded hbm capacity '
             'by 11.78M. Total hbm usage >= 8.01G: reserved 530.03M program 6.96G')
  required, available = tpu_compile.parse_out_of_memory(message)
  assert required == pytest.approx(8.01 * 2 ** 30)
  assert required - available == pytest.approx(11.78 * 2 ** 20)
  assert tpu_compile.parse_out_of_memory('RESOURCE_EXHAUSTED: no sizes here') is None
  probes = []

  def fits(b):  # fits up to 300; every refusal without numbers
    probes.append(b)
    return (True, 3.0 * b - 1000.0) if b <= 300 else (False, float('nan'))
  largest, exact = tpu_compile.largest_fitting_batch(fits, 8, 4096, float('nan'), 1000.0,
                                                     known_fit=128, fit_over=-616.0)
  assert (largest, exact) == (296, True) and len(probes) <= 12


def test_sweep_keeps_hand_notes_and_tables_the_largest_search(tmp_path):
  """A sweep's save keeps notes edited in the file since; the search grid shows what ran."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'sweep.json')
  a, b = 'configs/vitgan_cifar10.py', 'configs/ladagan_cifar10.py'

  def row(config, topology, dtype, **fields):
    return {'config': config, 'topology': topology, 'dtype': dtype, 'requested_batch': 128,
            'fits': True, **fields}
  bench_tpu.save({'rows': [row(a, 'v3-8', 'bfloat16'), row(b, 'v3-8', 'float32')],
                  'nan_guard_change': 'old note'}, out)
  sweep = bench_tpu.load(out)                    # a sweep starts ...
  on_disk = bench_tpu.load(out)
  on_disk['nan_guard_change'] = 'edited note'    # ... someone edits the file's note by hand ...
  with open(out, 'w') as f:
    json.dump(on_disk, f)
  sweep['rows'][0].update(largest_batch=15232, largest_batch_exact=False, largest_batch_probes=[
      {'global_batch': 15360, 'gib_over_capacity': 0.5}])
  sweep['rows'].append(row(a, 'v2-32', 'bfloat16', largest_batch=35072, largest_batch_exact=True,
                           largest_batch_probes=[{'global_batch': 63488, 'gib_over_capacity': 10}]))
  sweep['rows'].append(row(a, 'v4-8', 'bfloat16', largest_batch=14368, largest_batch_exact=True,
                           largest_batch_probes=[{'global_batch': 14400, 'gib_over_capacity': 1}]))
  bench_tpu.save(sweep, out)                     # ... and the sweep saves its search
  result = bench_tpu.load(out)
  assert result['nan_guard_change'] == 'edited note'
  grid = bench_tpu.largest_table(result, 'bfloat16').splitlines()
  assert grid[2] == '| config | v2-32 | v3-8 | v4-8 | v5e-8 | v6e-8 |'
  assert grid[4] == '| `vitgan_cifar10` | 35072 | ≥ 15232 | ≥ 14368 |  |  |'   # v4-8: not
  # checked above (no batch 1.25x as large refused), so a larger one may fit
  assert grid[5] == '| `ladagan_cifar10` |  |  |  |  |  |'
  assert bench_tpu.largest_table(result, 'float32') == ''
  assert bench_tpu.largest_not_searched(result) == (
      'Largest batch not searched yet: ladagan_cifar10 float32 on v3-8.')


def fake_compiler(monkeypatch, used, capacity, expect=lambda config, topology_name: None):
  """Makes the largest-batch searches ask `used(b)` (bytes per core) instead of compiling;
  returns the list of batches they ask, in order. expect(config, topology_name) checks each
  search's arguments."""
  compiled = []

  def fake_batch_fits(config, topology_name, cache, say, probes):
    expect(config, topology_name)

    def fits(b):
      compiled.append(b)
      if probes is not None:
        probes.append((b, used(b) - capacity))
      return used(b) <= capacity, used(b) - capacity, None
    return fits, tpu_specs.topology(topology_name)
  monkeypatch.setattr(tpu_compile, '_batch_fits', fake_batch_fits)
  return compiled


def test_close_resumes_a_search_from_its_bracket_and_survives_a_stale_sweep(tmp_path,
                                                                            monkeypatch):
  """--close picks up a '≥' search between its largest fit and smallest refusal; a sweep that
  loaded the file before (the old bracket in memory) does not put the old answer back."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.chdir(root)
  out = str(tmp_path / 'sweep.json')
  gib, capacity, step = 2**30, 16 * 2**30, 64            # v3-8: 8 cores x 8 images
  used = lambda b: 2 * gib + 0.9 * gib * b / 1000        # fits up to 15,555 images
  truth = max(b for b in range(step, 20_000, step) if used(b) <= capacity)
  over = lambda b: (used(b) - capacity) / gib
  row = {'config': 'configs/vitgan_cifar10.py', 'topology': 'v3-8', 'dtype': 'bfloat16',
         'requested_batch': 128, 'fits': False, 'error': 'made up', 'largest_batch': 14400,
         'largest_batch_exact': False, 'largest_batch_per_core_step': 8,
         'largest_batch_probes': [{'global_batch': b, 'gib_over_capacity': over(b)}
                                  for b in (128, 14400, 16384)]}
  bench_tpu.save({'rows': [row]}, out)
  stale = bench_tpu.load(out)                             # another sweep, loaded now
  def expect(config, topology_name):
    assert topology_name == 'v3-8' and str(config.training.dtype) == 'bfloat16'
  compiled = fake_compiler(monkeypatch, used, capacity, expect)
  args = ['--configs', 'configs/vitgan_cifar10.py', '--topologies', 'v3-8', '--dtypes',
          'bfloat16', '--out', out, '--close', '6']
  bench_tpu.main(args)
  saved = bench_tpu.load(out)['rows'][0]
  assert (saved['largest_batch'], saved['largest_batch_exact']) == (truth, True)
  check = compiled.pop()                                  # then one batch 1.25x as large
  assert check >= 1.25 * truth and used(check) > capacity and bench_tpu.settled(saved)
  assert compiled and all(14400 < b < 16384 for b in compiled) and len(compiled) + 1 <= 6
  assert len(saved['largest_batch_probes']) == 3 + len(compiled) + 1
  compiled.append(check)
  bench_tpu.main(args)                                    # settled now: nothing to resume
  assert len(compiled) == len(saved['largest_batch_probes']) - 3
  stale['rows'][0]['wall_seconds'] = 1.0                  # the stale sweep saves a new field
  bench_tpu.save(stale, out)
  saved = bench_tpu.load(out)['rows'][0]
  assert (saved['largest_batch'], saved['largest_batch_exact']) == (truth, True)
  assert saved['wall_seconds'] == 1.0
  assert f'| {truth} |' in bench_tpu.largest_table(bench_tpu.load(out), 'bfloat16')


def test_close_goes_on_upward_when_no_probe_was_refused(tmp_path, monkeypatch):
  """A search that ran out of compiles while every probe fitted resumes upward from its fit;
  the fit it starts from (asked again, from the cache in a real sweep) is recorded once."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = str(tmp_path / 'sweep.json')
  gib, capacity, step = 2**30, 16 * 2**30, 64
  used = lambda b: 2 * gib + 0.9 * gib * b / 1000
  truth = max(b for b in range(step, 20_000, step) if used(b) <= capacity)
  row = {'config': 'configs/vitgan_cifar10.py', 'topology': 'v3-8', 'dtype': 'float32',
         'requested_batch': 128, 'fits': False, 'error': 'made up', 'largest_batch': 8000,
         'largest_batch_exact': False, 'largest_batch_per_core_step': 8,
         'largest_batch_probes': [{'global_batch': b, 'gib_over_capacity': (used(b) - capacity)
                                   / gib} for b in (128, 8000)]}
  bench_tpu.save({'rows': [row]}, out)
  compiled = fake_compiler(monkeypatch, used, capacity)
  bench_tpu.main(['--configs', 'configs/vitgan_cifar10.py', '--topologies', 'v3-8', '--dtypes',
                  'float32', '--out', out, '--close', '6'])
  saved = bench_tpu.load(out)['rows'][0]
  assert (saved['largest_batch'], saved['largest_batch_exact']) == (truth, True)
  assert compiled[0] == 8000 and all(b >= 8000 for b in compiled) and len(compiled) <= 8
  assert bench_tpu.settled(saved) and compiled[-1] >= 1.25 * truth
  recorded = [p['global_batch'] for p in saved['largest_batch_probes']]
  assert recorded == [128, *compiled] and len(set(recorded)) == len(recorded)


def test_a_row_fitting_above_a_settled_search_reopens_it(tmp_path, monkeypatch):
  """A row compiled at a batch above its cell's settled answer, that fits, turns the cell into
  '≥ that batch' (a probe of the search) and --close goes on upward from it."""
  from bench import tpu_compile as bench_tpu  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = str(tmp_path / 'sweep.json')
  gib, capacity = 2**30, 16 * 2**30
  def used(b):   # fits up to 5824, refused from 5888 to 7499, fits again from 7500 to 15555
    if b < 6000:
      return 9 * gib + 1.2 * gib * b / 1000
    return 17 * gib if b < 7500 else 2 * gib + 0.9 * gib * b / 1000
  cell = {'config': 'configs/stylegan2_cifar10.py', 'topology': 'v5e-8', 'dtype': 'bfloat16'}
  searched = {**cell, 'requested_batch': 128, 'fits': False, 'error': 'made up',
              'largest_batch': 5824, 'largest_batch_exact': True,
              'largest_batch_per_core_step': 8,
              'largest_batch_probes': [{'global_batch': b, 'gib_over_capacity':
                                        (used(b) - capacity) / gib} for b in (128, 5824, 5888, 7296)]}
  above = {**cell, 'requested_batch': 7872, 'fits': True, 'global_batch': 7872,
           'hbm_capacity_gib_per_core': 16.0, 'floor_ms': 2.0, 'compute_ms': 2.0,
           'memory_ms': 1.0, 'images_per_s_at_peak': 1.0, 'images_per_s_at_30pct': 0.3,
           'programs': [{'name': 'train step', 'total_bytes': used(7872), 'flops': 1.0,
                         'bytes_accessed': 1.0, 'compile_seconds': 1.0}]}
  bench_tpu.save({'rows': [searched, above]}, out)
  assert bench_tpu.settled(bench_tpu.load(out)['rows'][0])
  assert '| ≥ 7872 |' in bench_tpu.largest_table(
      (lambda r: (bench_tpu.adopt_larger_fits(r), r)[1])(bench_tpu.load(out)), 'bfloat16')
  compiled = fake_compiler(monkeypatch, used, capacity)
  bench_tpu.main(['--configs', 'configs/stylegan2_cifar10.py', '--topologies', 'v5e-8',
                  '--dtypes', 'bfloat16', '--out', out, '--close', '8'])
  truth = max(b for b in range(64, 20_000, 64) if used(b) <= capacity)
  saved = bench_tpu.load(out)['rows'][0]
  assert compiled[0] == 7872 and all(b >= 7872 for b in compiled)
  assert (saved['largest_batch'], bench_tpu.settled(saved)) == (truth, True)
  recorded = [p['global_batch'] for p in saved['largest_batch_probes']]
  assert recorded == [128, 5824, 5888, 7296, 7872, *compiled[1:]]
  assert bench_tpu.largest_not_searched(bench_tpu.load(out)) == ''   # one cell, searched


@pytest.mark.parametrize('budget', [1, 2, 3])
def test_close_bracket_spends_one_budget_on_the_bracket_and_the_check_above(monkeypatch, budget):
  """max_compiles bounds the whole resumed search: closing the bracket and checking above."""
  gib, capacity = 2**30, 16 * 2**30
  used = lambda b: 2 * gib + 0.9 * gib * b / 1000        # the bracket closes in 2 compiles
  compiled = fake_compiler(monkeypatch, used, capacity)
  found, exact = tpu_compile.close_bracket(
      None, 'v3-8', 14400, used(14400) - capacity, 16384, used(16384) - capacity,
      per_core_step=8, max_compiles=budget)
  assert len(compiled) == min(budget, 3)
  assert exact == (budget >= 3) and found <= 15555 and used(found) <= capacity
