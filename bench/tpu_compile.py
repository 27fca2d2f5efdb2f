"""Which config fits which TPU, and its step-time floor: the TPU compiler's view, on a CPU host.

Sweeps configs x topologies x global batch x dtype, compiling each config's exact train step
for the topology with libtpu (`vitgan_jax.tpu_compile`; no TPU needed) and records per-core
HBM, FLOPs, bytes accessed, collectives and the roofline floor. Every number is compile-time
analysis, not a measured speed.

  python -m bench.tpu_compile                       # the whole sweep (hours on one core)
  python -m bench.tpu_compile --configs configs/vitgan_cifar10.py --dtypes bfloat16
  python -m bench.tpu_compile --largest             # also search the largest batch that fits
                                                    # (in steps of 8 images per core;
                                                    # --largest_compiles N caps its compiles)
  python -m bench.tpu_compile --close 6             # resume searches that ran out of compiles
  python -m bench.tpu_compile --refresh             # recompile rows made at an older commit
  python -m bench.tpu_compile --table               # the README table from the JSON
  python -m bench.tpu_compile --write_readme        # ... written into README.md

Results accumulate in --out (rows already there are skipped, so an interrupted sweep resumes;
sweeps run side by side, e.g. one per core, merge their rows into it); compiler answers are
also cached in $VITGAN_CACHE/tpu_compile. Combinations not run are listed in the JSON's
`not_run`.
"""

import argparse
import datetime
import fcntl
import functools
import json
import os
import subprocess
import time

import vitgan_jax  # noqa: F401  # pylint: disable=unused-import  # first: quiet libtpu (tpu_env)
from bench import common  # pylint: disable=g-bad-import-order
from vitgan_jax import errors, tpu_compile

CONFIGS = ('configs/vitgan_cifar10.py', 'configs/vitgan_celeba64.py',
           'configs/vitgan_lsun_bedroom64.py', 'configs/stylegan2_cifar10.py',
           'configs/transgan_cifar10.py', 'configs/ladagan_cifar10.py')
TOPOLOGIES = ('v2-32', 'v3-8', 'v4-8', 'v5e-8', 'v6e-8')
DEFAULT_OUT = 'bench/results/2026-12-02-tpu-compile.json'
README_BEGIN = '<!-- tpu-compile table: python -m bench.tpu_compile --write_readme -->'
README_END = '<!-- end tpu-compile table -->'
# What a sweep writes at the top level; the JSON's other top-level fields are notes edited by
# hand, which save() takes from the file so a sweep started earlier does not put back its copy.
SWEEP_FIELDS = ('rows', 'grid', 'not_run', 'date', 'updated', 'libtpu', 'note')


def _key(row) -> tuple:
  return (row['config'], row['topology'], row['dtype'], row['requested_batch'])


@functools.lru_cache(maxsize=None)
def _commit() -> str:
  """The checkout's commit when the sweep started (the code it imported), so each row says
  which train step the compiler saw; '+dirty' when the library or configs had changes."""
  def git(*args):
    return subprocess.run(['git', *args], capture_output=True, text=True, check=True).stdout
  try:
    dirty = git('status', '--porcelain', '--', 'vitgan_jax', 'configs').strip()
    return git('rev-parse', '--short', 'HEAD').strip() + ('+dirty' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def run_one(config_path, topology, batch, dtype, largest=0,
            max_compiles=tpu_compile.MAX_SEARCH_COMPILES) -> dict:
  config = common.load_config(config_path, {'training.batch_size': batch,
                                            'training.dtype': dtype})
  start = time.perf_counter()
  row = {'config': config_path, 'topology': topology, 'dtype': dtype, 'requested_batch': batch,
         'code_commit': _commit(),
         'compiled_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  try:
    report = tpu_compile.check(config, topology, config_name=config_path,
                               which=('train step',), search=False,
                               say=lambda s: print(s, flush=True))
    row.update(report.to_dict(), fits=True)
  except tpu_compile.DoesNotFitError as e:
    row.update(fits=False, error=str(e))
  except errors.Error as e:
    row.update(fits=None, error=str(e))
  if largest:
    add_largest(row, largest, max_compiles)
  row['wall_seconds'] = time.perf_counter() - start
  return row


def refresh(row) -> None:
  """Recompiles row's train step at this commit in place (--refresh); its largest-batch search
  stays, under its own commit, and the floor it replaces is kept as previous_floor_ms."""
  new = run_one(row['config'], row['topology'], row['requested_batch'], row['dtype'])
  new.update(previous_code_commit=row.get('code_commit'), previous_floor_ms=row.get('floor_ms'))
  new.update(_search_fields(row))
  row.clear()
  row.update(new)


def add_largest(row, per_core_step, max_compiles=tpu_compile.MAX_SEARCH_COMPILES) -> None:
  """Searches the largest global batch (a multiple of per_core_step x cores) that fits row's,
  in up to max_compiles compiles (past them: a '≥' cell that --close resumes)."""
  config = common.load_config(row['config'], {'training.batch_size': row['requested_batch'],
                                              'training.dtype': row['dtype']})
  start, probes = time.perf_counter(), []
  found, exact = tpu_compile.largest_batch(config, row['topology'], per_core_step=per_core_step,
                                           say=lambda s: print(s, flush=True), probes=probes,
                                           max_compiles=max_compiles)
  row.update(largest_batch=found, largest_batch_exact=exact,
             largest_batch_per_core_step=per_core_step,
             largest_batch_probes=[{'global_batch': b, 'gib_over_capacity': over / 2**30}
                                   for b, over in probes],
             largest_batch_wall_seconds=time.perf_counter() - start,
             largest_batch_code_commit=_commit())


def bracket(row) -> tuple:
  """(largest fit, its bytes over, smallest failure above it, its bytes over) of row's search;
  the failure is (None, None) when every probe fitted."""
  probes = _probe_list(row)
  fit = [p for p in probes if p[0] == row['largest_batch']]
  failed = sorted(p for p in probes if p[1] > 0 and p[0] > row['largest_batch'])
  return (*fit[0], *(failed[0] if failed else (None, None)))


def settled(row) -> bool:
  """Whether row's largest batch stands: its bracket closed and a batch CHECK_ABOVE x larger
  was refused (memory near the capacity is not monotone in the batch; searches before that
  check are settled only where one of their probes happens to be such a batch)."""
  return bool(row.get('largest_batch_exact')) and tpu_compile.checked_above(
      row['largest_batch'], [b for b, over in _probe_list(row) if over > 0])


def _probe_list(row) -> list:
  return [(p['global_batch'], p['gib_over_capacity'] * 2**30)
          for p in row.get('largest_batch_probes', [])]


def close_largest(row, max_compiles) -> None:
  """Resumes row's largest-batch search that is not settled, from its recorded bracket, for up
  to max_compiles more compiles (probes already compiled come from the cache); each batch is
  recorded once."""
  config = common.load_config(row['config'], {'training.batch_size': row['requested_batch'],
                                              'training.dtype': row['dtype']})
  start, probes = time.perf_counter(), []
  fit, fit_over, fail, fail_over = bracket(row)
  say = lambda s: print(s, flush=True)  # noqa: E731
  step = row['largest_batch_per_core_step']
  if fail is None:   # never refused: go on upward from the largest fit
    found, exact = tpu_compile.largest_batch(
        tpu_compile.with_batch(config, fit), row['topology'], per_core_step=step, say=say,
        probes=probes, max_compiles=max_compiles)
  else:
    found, exact = tpu_compile.close_bracket(
        config, row['topology'], fit, fit_over, fail, fail_over, per_core_step=step,
        max_compiles=max_compiles, say=say, probes=probes,
        refused_before=[b for b, over in _probe_list(row) if over > 0])
  recorded = {b for b, _ in _probe_list(row)}   # an upward resume re-asks its start batch
  row['largest_batch_probes'] += [{'global_batch': b, 'gib_over_capacity': over / 2**30}
                                  for b, over in probes if b not in recorded]
  row.update(largest_batch=found, largest_batch_exact=exact,
             largest_batch_wall_seconds=row.get('largest_batch_wall_seconds', 0.0)
             + time.perf_counter() - start,
             largest_batch_resumed_commit=_commit())


def adopt_larger_fits(result) -> bool:
  """Makes a row compiled at a larger batch than its cell's search answer (same config,
  topology and dtype) that fit a probe of that search, which then reads '≥' and resumes upward
  from it with --close; whether any search changed. Memory near the capacity is not monotone
  in the batch: StyleGAN2 bfloat16 on v5e-8 settled at 4288, yet its row at 7872 fits."""
  changed = False
  for row in result['rows']:
    if 'largest_batch' not in row:
      continue
    fits_above = [r for r in result['rows'] if r.get('fits') and _key(r)[:3] == _key(row)[:3]
                  and r['global_batch'] > row['largest_batch']]
    if not fits_above:
      continue
    above = max(fits_above, key=lambda r: r['global_batch'])
    over = _train_step(above)['total_bytes'] / 2**30 - above['hbm_capacity_gib_per_core']
    if above['global_batch'] not in {b for b, _ in _probe_list(row)}:
      row['largest_batch_probes'].append({'global_batch': above['global_batch'],
                                          'gib_over_capacity': over})
    row.update(largest_batch=above['global_batch'], largest_batch_exact=False)
    changed = True
  return changed


def load(path) -> dict:
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {'rows': []}


def save(result, path) -> None:
  """Writes `result`, first merging in what another sweep saved to `path` since we loaded it.

  Two sweeps may share one JSON (e.g. one per core): under a lock, rows only on disk are added
  to `result` and fields only on disk are added to this sweep's rows (this sweep's fields win,
  except a largest-batch search with more probes on disk: one resumed by --close, and a row
  compiled later on disk: one recompiled by --refresh), so neither overwrites the other's rows,
  recompiles or largest-batch searches. Top-level notes (not in SWEEP_FIELDS) are the file's.
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    on_disk = load(path)
    result.update({k: v for k, v in on_disk.items() if k not in SWEEP_FIELDS})
    ours = {_key(r): r for r in result['rows']}
    for row in on_disk['rows']:
      if _key(row) in ours:
        mine = ours[_key(row)]
        on_disk_later = row.get('compiled_at', '') > mine.get('compiled_at', '')
        mine_later = mine.get('compiled_at', '') > row.get('compiled_at', '')
        if on_disk_later:   # recompiled since we loaded: its compile wins, the search stays
          searched = _search_fields(mine)
          mine.clear()
          mine.update({k: v for k, v in row.items() if not k.startswith('largest_batch')},
                      **searched)
        # a search resumed since we loaded: its answer wins
        if _probe_count(row) > _probe_count(mine):
          mine.update(_search_fields(row))
        for field, value in row.items():   # not the stale compile's fields under a newer one
          if not mine_later or field.startswith('largest_batch'):
            mine.setdefault(field, value)
      else:
        result['rows'].append(row)
    if 'grid' in result or 'grid' in on_disk:
      grid = {tuple(g) for g in result.get('grid', []) + on_disk.get('grid', [])}
      done = {_key(r) for r in result['rows']}
      result['grid'] = sorted(grid)
      result['not_run'] = sorted(g for g in grid if g not in done)
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
      json.dump(result, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _train_step(row) -> dict:
  """The compiled train step's program report in a row that fits."""
  return next(p for p in row['programs'] if p['name'] == 'train step')


def _search_fields(row) -> dict:
  """row's largest-batch search: fields that name their own commit and outlive a recompile."""
  return {k: v for k, v in row.items() if k.startswith('largest_batch')}


def _probe_count(row) -> int:
  return len(row.get('largest_batch_probes', []))


def table(result) -> str:
  """Markdown: which config fits which TPU at what batch, and its floor (compile-time only)."""
  lines = [
      '| config | TPU | dtype | global batch | fits | per-core HBM GiB (of) | GFLOP / core / step | '
      'GB accessed / core / step | floor ms (bound) | img/s at 100% / 30% of peak | '
      'largest batch that fits | compile s | commit |',
      '|---|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|']
  for row in sorted(result['rows'], key=lambda r: (r['config'], TOPOLOGIES.index(r['topology'])
                                                  if r['topology'] in TOPOLOGIES else 99,
                                                  r['dtype'], r['requested_batch'])):
    name = _config_name(row['config'])
    largest = _largest_cell(row)
    commit = row.get('code_commit', '–')
    if not row.get('fits'):
      lines.append(f'| {name} | {row["topology"]} | {row["dtype"]} | {row["requested_batch"]} | '
                   f'no | | | | | | {largest} | | {commit} |')
      continue
    step = _train_step(row)
    bound = 'memory' if row['memory_ms'] > row['compute_ms'] else 'compute'
    lines.append(
        f'| {name} | {row["topology"]} | {row["dtype"]} | {row["global_batch"]} | yes | '
        f'{step["total_bytes"] / 2**30:.2f} ({row["hbm_capacity_gib_per_core"]:.0f}) | '
        f'{step["flops"] / 1e9:.1f} | {step["bytes_accessed"] / 1e9:.2f} | '
        f'{row["floor_ms"]:.2f} ({bound}) | {row["images_per_s_at_peak"]:,.0f} / '
        f'{row["images_per_s_at_30pct"]:,.0f} | {largest} | {step["compile_seconds"]:.0f} | '
        f'{commit} |')
  not_run = result.get('not_run') or []
  if not_run:
    groups = {}
    for c, t, d, b in not_run:
      groups.setdefault((_config_name(c), d, b), []).append(t)
    lines.append('')
    lines.append(f'Not run ({len(not_run)} combinations; {result.get("not_run_reason", "")}): '
                 + '; '.join(f'{c} {d} batch {b} on {", ".join(ts)}'
                             for (c, d, b), ts in sorted(groups.items())) + '.')
  return '\n'.join(lines)


def _config_name(path) -> str:
  return os.path.basename(path).replace('.py', '')


def _searched_rows(result, dtype) -> dict:
  """(config, topology) -> the row of `dtype` whose largest batch was searched."""
  return {(r['config'], r['topology']): r for r in result['rows']
          if r['dtype'] == dtype and 'largest_batch' in r}


def largest_table(result, dtype) -> str:
  """Markdown: the largest global batch that fits, config x topology; '' if none searched."""
  searched = _searched_rows(result, dtype)
  if not searched:
    return ''
  configs = sorted({r['config'] for r in result['rows']},
                   key=lambda c: (CONFIGS.index(c) if c in CONFIGS else 99, c))
  lines = [f'Largest global batch that fits, {dtype} (≥: a larger one may fit: the search ran '
           'out of compiles, or no batch {:g}× as large was refused; empty: not searched):'
           .format(tpu_compile.CHECK_ABOVE), '',
           '| config | ' + ' | '.join(TOPOLOGIES) + ' |', '|---|' + '--:|' * len(TOPOLOGIES)]
  for config in configs:
    cells = [_largest_cell(searched[(config, t)]).split(' (')[0] if (config, t) in searched
             else '' for t in TOPOLOGIES]
    lines.append(f'| `{_config_name(config)}` | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def largest_not_searched(result) -> str:
  """One line: which compiled cells (config, topology, dtype) have no largest-batch search yet
  in any of their rows, by config and dtype."""
  cells = {_key(r)[:3] for r in result['rows']}
  searched = {_key(r)[:3] for r in result['rows'] if 'largest_batch' in r}
  groups = {}
  for config, topology, dtype in cells - searched:
    groups.setdefault((_config_name(config), dtype), []).append(topology)
  if not groups:
    return ''
  return 'Largest batch not searched yet: ' + '; '.join(
      f'{c} {d} on {", ".join(sorted(ts, key=TOPOLOGIES.index))}'
      for (c, d), ts in sorted(groups.items())) + '.'


def _largest_cell(row) -> str:
  """'N'; '≥ N (< M)' when the search stopped with a gap (M: the smallest batch that failed);
  '≥ N' when it closed but no batch CHECK_ABOVE x N was refused (see settled)."""
  largest = row.get('largest_batch')
  if largest is None:
    return '–'
  if settled(row):
    return f'{largest}'
  if row.get('largest_batch_exact'):
    return f'≥ {largest}'
  failed = [p['global_batch'] for p in row.get('largest_batch_probes', [])
            if p['gib_over_capacity'] > 0 and p['global_batch'] > largest]
  return f'≥ {largest}' + (f' (< {min(failed)})' if failed else '')


def write_readme(result, out_path, readme='README.md') -> None:
  with open(readme) as f:
    text = f.read()
  when = result.get('date', '?')
  if result.get('updated', when) != when:
    when += f' to {result["updated"]}'
  block = (f'{README_BEGIN}\n'
           f'Compile-time analysis by the TPU compiler (libtpu {result.get("libtpu", "?")}, '
           f'on a CPU host, {when}; `{out_path}`), per core; not measured '
           'speed.\n\n' + ''.join(f'{t}\n\n' for t in (
               largest_table(result, 'bfloat16'), largest_table(result, 'float32'),
               largest_not_searched(result)) if t)
           + table(result) + f'\n{README_END}')
  if README_BEGIN in text:
    head, rest = text.split(README_BEGIN, 1)
    text = head + block + rest.split(README_END, 1)[1]
  else:
    raise SystemExit(f'{readme} has no {README_BEGIN} marker')
  with open(readme, 'w') as f:
    f.write(text)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--topologies', default=','.join(TOPOLOGIES))
  parser.add_argument('--batches', default='128')
  parser.add_argument('--dtypes', default='bfloat16,float32')
  parser.add_argument('--largest', type=int, nargs='?', const=8, default=0, metavar='PER_CORE',
                      help='also search the largest global batch that fits, in steps of '
                      'PER_CORE (default 8) images per core; adds it to rows already there')
  parser.add_argument('--largest_compiles', type=int, default=tpu_compile.MAX_SEARCH_COMPILES,
                      metavar='N', help='compiles a --largest search may spend (default '
                      '%(default)s); one that runs out is a "≥" cell for --close')
  parser.add_argument('--close', type=int, default=0, metavar='COMPILES',
                      help='resume largest-batch searches that are not settled (the "≥" '
                      'cells: out of compiles, or not checked above) for up to COMPILES more '
                      'compiles each')
  parser.add_argument('--refresh', action='store_true',
                      help='recompile rows whose train step was compiled at another commit '
                      '(their largest-batch searches stay, naming their own commit)')
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument('--table', action='store_true', help='print the table from --out')
  parser.add_argument('--write_readme', action='store_true')
  args = parser.parse_args(argv)
  _commit()  # now, before any compile: a commit made while the sweep runs is not its code
  result = load(args.out)
  if adopt_larger_fits(result) and not (args.table or args.write_readme):
    save(result, args.out)
  if args.table or args.write_readme:
    if args.write_readme:
      write_readme(result, args.out)
    print(table(result))
    return
  grid = [(c, t, d, int(b)) for c in args.configs.split(',') for d in args.dtypes.split(',')
          for b in args.batches.split(',') for t in args.topologies.split(',')]
  done = {_key(r): r for r in result['rows']}
  result.setdefault('date', datetime.date.today().isoformat())
  result.update(updated=datetime.date.today().isoformat(), libtpu=tpu_compile.libtpu_version(),
                note='compile-time analysis by the TPU compiler on a CPU host; not measured speed')
  all_grid = {tuple(x) for x in result.get('grid', [])} | set(grid)
  result['grid'] = sorted(all_grid)
  for config_path, topology, dtype, batch in grid:
    row = done.get((config_path, topology, dtype, batch))
    if row is not None:
      if args.refresh and row.get('code_commit') != _commit():
        print(f'== {config_path} {topology} {dtype} batch {batch}: recompiling (was '
              f'{row.get("code_commit", "an earlier commit")})', flush=True)
        refresh(row)
        print(f'floor {row.get("previous_floor_ms")} -> {row.get("floor_ms")} ms', flush=True)
        save(result, args.out)
      if args.largest and 'largest_batch' not in row:
        print(f'== {config_path} {topology} {dtype}: largest batch', flush=True)
        add_largest(row, args.largest, args.largest_compiles)
        print(f'largest global batch that fits: {_largest_cell(row)}', flush=True)
        save(result, args.out)
      if args.close and 'largest_batch' in row and not settled(row):
        print(f'== {config_path} {topology} {dtype}: closing {_largest_cell(row)}', flush=True)
        close_largest(row, args.close)
        print(f'largest global batch that fits: {_largest_cell(row)}', flush=True)
        save(result, args.out)
      continue
    print(f'== {config_path} {topology} {dtype} batch {batch}', flush=True)
    row = run_one(config_path, topology, batch, dtype, args.largest, args.largest_compiles)
    print(json.dumps({k: v for k, v in row.items() if k != 'programs'}), flush=True)
    result['rows'].append(row)
    done[_key(row)] = row
    save(result, args.out)   # also lists the grid's combinations not run yet
  save(result, args.out)
  print(table(result))


if __name__ == '__main__':
  main()
