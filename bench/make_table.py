"""Prints the README's "Performance" section (Markdown) from the newest merged results JSON.

  python -m bench.make_table                 # newest bench/results/<date>-<device>.json
  python -m bench.make_table PATH.json       # a given one
"""

import argparse
import glob
import json
import os

from bench import profile_step

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
GIB = 2.0 ** 30


def newest_results(results_dir=RESULTS_DIR, include_quick=True):
  """The newest merged run_all JSON (by date in the name, then modification time)."""
  candidates = []
  for path in glob.glob(os.path.join(results_dir, '*.json')):
    try:
      with open(path) as f:
        data = json.load(f)
    except (OSError, ValueError):
      continue
    if data.get('kind') != 'vitgan_jax benchmarks':
      continue
    if data.get('quick') and not include_quick:
      continue
    candidates.append((data.get('date', ''), not data.get('quick'), os.path.getmtime(path),
                       path))
  if not candidates:
    raise SystemExit(f'no merged results in {results_dir} (run bench/run_all.sh)')
  return max(candidates)[-1]


def _num(value, digits=1, scale=1.0):
  if value is None:
    return '–'
  return f'{value * scale:,.{digits}f}'


def _tflops(value):
  return _num(value, 1 if value is not None and value >= 10 else 3)


def hardware_line(data):
  d, v = data['device'], data['versions']
  count = f'{d["num_devices"]}x ' if d['num_devices'] > 1 else '1x '
  name = (f'CPU ({d["host_cpus"]} cores)' if d['platform'] == 'cpu' else d['device_kind'])
  peak = (f', MFU against {d["peak_bf16_flops_per_device"] / 1e12:.0f} TFLOP/s dense bf16 '
          f'({d["peak_spec_key"]} spec)' if d.get('peak_bf16_flops_per_device') else '')
  return (f'Measured on {count}{name}, {data["date"]}, jax {v["jax"]}, flax {v["flax"]}'
          f'{peak}; `{data.get("command", "bash bench/run_all.sh")}`.')


def throughput_table(part):
  rows = [p for p in part['points'] if 'images_per_second' in p]
  lines = ['| config | D attention | dtype | batch | img/s | ms/step | GFLOP/img | TFLOP/s '
           '| MFU | compile s | XLA memory GiB |',
           '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|']
  for p in rows:
    overrides = part['settings']['variants'][p['variant']]['overrides']
    attention = overrides.get('model.discriminator.attention', 'l2')
    if overrides.get('model.discriminator.l2_form', 'bias') != 'bias':
      attention += f' {overrides["model.discriminator.l2_form"]}'
    if p['attention_impl'] != 'xla':  # the fused kernel takes only bias-free attention
      attention += f'; {p["attention_impl"]} for bias-free attention'
    memory = (p.get('xla_memory') or {}).get('estimated_step_bytes')
    lines.append(
        f'| {p["variant"]} | {attention} | {p["dtype"]} | {p["batch_size"]} '
        f'| {_num(p["images_per_second"], 0)} | {_num(p["ms_per_step"], 2)} '
        f'| {_num(p.get("flops_per_image"), 2, 1e-9)} | {_tflops(p.get("achieved_tflops"))} '
        f'| {_num(p.get("mfu"), 1, 100.0) + "%" if p.get("mfu") is not None else "–"} '
        f'| {_num(p.get("compile_seconds"), 0)} | {_num(memory, 2, 1 / GIB)} |')
  missing = [p for p in part['points'] if 'images_per_second' not in p]
  if missing:
    lines.append('')
    lines.append('Not measured: ' + '; '.join(
        f'{p["variant"]}/b{p["batch_size"]}/{p["dtype"]}/{p["attention_impl"]}: '
        f'{(p.get("skipped") or p.get("error", "")[:80]).rstrip(".")}' for p in missing) + '.')
  return lines


def kernel_lines(part, top=10):
  """The profiled point's device time by kernel kind (train_throughput --trace), if any."""
  for p in part['points']:
    times = p.get('kernel_times')
    if isinstance(times, dict) and times.get('by_kind'):
      steps = times.get('steps', 1)
      lines = [f'Where the time goes ({p["variant"]}, batch {p["batch_size"]}, {p["dtype"]}: '
               f'{_num(times["total_ms"] / steps, 2)} ms of kernels per step, '
               f'{times["events"] // steps:,} kernel launches per step; top kinds):', '',
               '| kernel kind | ms/step | share | launches/step |', '|---|--:|--:|--:|']
      grouped = {}  # library kernels by library (kernel_kind), also in older results
      for kind, ms, share, count in times['by_kind']:
        key = profile_step.kernel_kind(kind)
        old = grouped.get(key, (0.0, 0.0, 0))
        grouped[key] = (old[0] + ms, old[1] + share, old[2] + count)
      ranked = sorted(grouped.items(), key=lambda kv: -kv[1][0])
      for kind, (ms, share, count) in ranked[:top]:
        lines.append(f'| `{kind[:60]}` | {_num(ms / steps, 2)} | {_num(share, 1, 100.0)}% '
                     f'| {count // steps:,} |')
      return lines + ['']
  return []


def fid_lines(part):
  s = part['settings']
  lines = [f'FID evaluation ({s["config"]} generator, Inception weights: '
           f'{s["inception_weights"]}):', '',
           '| part | seconds | images/s |', '|---|--:|--:|']
  gen = part['generate']
  lines.append(f'| generate {gen["images"]} EMA samples | {_num(gen["seconds"], 1)} '
               f'| {_num(gen["images_per_second"], 0)} |')
  for t in part['inception']:
    lines.append(f'| Inception alone, precision {t["precision"]}, batch {t["batch_size"]} '
                 f'({t["images"]} images) | {_num(t["seconds"], 1)} '
                 f'| {_num(t["images_per_second"], 0)} |')
  for e in part.get('e2e', []):
    n = e['num_samples']
    lines += [
        f'| FID-{n} features (generate, resize, Inception {e["precision"]}) '
        f'| {_num(e["features_seconds"], 1)} | {_num(e["features_images_per_second"], 0)} |',
        f'| FID-{n} statistics (float64 mean, covariance) | {_num(e["stats_seconds"], 1)} | |',
        f'| FID-{n} Frechet distance, sqrtm / eig | {_num(e["frechet_sqrtm_seconds"], 1)} / '
        f'{_num(e["frechet_eig_seconds"], 1)} | |',
        f'| **FID-{n} end to end** | **{_num(e["total_seconds"], 1)}** '
        f'({_num(e["total_seconds_with_eig"], 1)} with eig) | |']
  return lines


def learning_curve_lines(part):
  """Per row of bench/learning_curve.py: FID against training minutes and images seen."""
  s = part['settings']
  lines = []
  for row in part['rows']:
    lines += [f'Learning curve, row {row["row"]} ({s["config"]}, batch '
              f'{row["config"]["training"]["batch_size"]}, FID of {s["fid_samples"]} EMA samples '
              f'vs {s["fid_reference"]}; {s["meaning"]}):', '',
              '| training min | images seen | FID |', '|--:|--:|--:|']
    for c in row['curve']:
      lines.append(f'| {c["train_seconds"] / 60:.1f} | {c["images_seen"]:,} | {c["fid"]:.2f} |')
    summary = row['summary']
    lines += ['', f'{summary["images_seen"]:,} images in {summary["train_seconds"] / 60:.1f} '
              f'training minutes.', '']
  return lines[:-1]


def quality_lines(part):
  """The quality run of results before 2026-12 (bench/quality_run.py, since folded into
  learning_curve.py): kept so their JSON still renders."""
  s = part['settings']
  lines = [f'Quality run ({s["config"]}, batch {s["batch_size"]}, {s["dtype"]}, FID of '
           f'{s["fid_samples"]} EMA samples vs {s["fid_reference"]}; Inception weights '
           f'{s["inception_weights"]}: {s["meaning"]}):', '',
           '| training min | images seen | FID |', '|--:|--:|--:|']
  for c in part['curve']:
    lines.append(f'| {c["train_seconds"] / 60:.1f} | {c["images_seen"]:,} | {c["fid"]:.2f} |')
  lines.append('')
  lines.append(f'{part["images_seen"]:,} images in {part["train_seconds"] / 60:.1f} training '
               f'minutes ({_num(part.get("train_images_per_second"), 0)} img/s); stopped: '
               f'{part["stop_reason"]}.')
  return lines


def render(data):
  lines = ['## Performance', '']
  if data.get('is_cpu_result'):
    lines += ['**CPU results** (`--quick`: the tiny configs/smoke.py model on a shared 2-core '
              'CPU). They check that every benchmark runs end to end; they are not '
              'accelerator performance.', '']
  lines += [hardware_line(data), '']
  if 'train_throughput' in data:
    lines += ['Training step (D step on DiffAugment-ed real + fake with bCR, G step, EMA: '
              'exactly what training runs; one random batch resident on the device; FLOPs: '
              "the matmuls and convolutions of the step's jaxpr, forward and backward):", '']
    lines += throughput_table(data['train_throughput']) + ['']
    lines += kernel_lines(data['train_throughput'])
  if 'fid_speed' in data:
    lines += fid_lines(data['fid_speed']) + ['']
  if 'learning_curve' in data:
    lines += learning_curve_lines(data['learning_curve']) + ['']
  if 'quality_run' in data:
    lines += quality_lines(data['quality_run']) + ['']
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('path', nargs='?', default=None)
  args = parser.parse_args(argv)
  path = args.path or newest_results()
  with open(path) as f:
    print(render(json.load(f)))
  print(f'<!-- from {os.path.relpath(path)} -->')


if __name__ == '__main__':
  main()
