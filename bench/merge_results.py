"""Merges the per-benchmark JSONs of one run_all.sh into bench/results/<date>-<device>.json.

  python -m bench.merge_results PART.json ... [--out PATH]
"""

import argparse
import json
import os

from bench import common

SHARED_KEYS = ('date', 'time_utc', 'device', 'is_cpu_result', 'versions', 'xla_flags', 'quick')


def merge(parts, command=''):
  """{'date', 'device', 'versions', ..., '<benchmark>': its own fields} from part results."""
  merged = {'kind': 'vitgan_jax benchmarks', 'command': command}
  for part in parts:
    for key in SHARED_KEYS:
      merged.setdefault(key, part.get(key))
    merged['quick'] = merged['quick'] or part.get('quick')
    merged[part['benchmark']] = {k: v for k, v in part.items()
                                 if k not in SHARED_KEYS and k != 'benchmark'}
  if merged.get('is_cpu_result'):
    merged['label'] = 'CPU results: plumbing check, not accelerator performance'
  return merged


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('parts', nargs='+')
  parser.add_argument('--out', default=None)
  parser.add_argument('--command', default='bash bench/run_all.sh')
  args = parser.parse_args(argv)
  parts = []
  for path in args.parts:
    try:
      with open(path) as f:
        parts.append(json.load(f))
    except (OSError, ValueError) as e:
      print(f'skipping {path}: {e}')
  if not parts:
    raise SystemExit('no results to merge')
  merged = merge(parts, args.command)
  if not args.out:
    slug = common.device_slug(merged['device']) + ('-quick' if merged['quick'] else '')
    args.out = os.path.join(common.RESULTS_DIR, f'{merged["date"]}-{slug}.json')
  common.write_json(merged, args.out)
  print(args.out)


if __name__ == '__main__':
  main()
