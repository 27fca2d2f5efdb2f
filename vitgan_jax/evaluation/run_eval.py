"""`vitgan-train --mode eval`: FID / IS / KID of a workdir's checkpoint, printed and saved as JSON."""

import datetime
import json

import jax
from etils import epath

from vitgan_jax import checkpoint, errors, sharding
from vitgan_jax.evaluation import train_eval


def _check_reference_source(config) -> None:
  if config.data.source == 'arrays' and not config.eval.reference_stats:
    raise errors.ConfigError(
        "--mode eval needs the training data's statistics: data.source is 'arrays', which "
        'only a Python caller can feed; set --config.eval.reference_stats to a stats .npz, '
        'or data.source to tfds / npz / folder')


def describe(results: dict) -> str:
  """'FID 12.345, IS 7.89 ± 0.12, KID 0.0123 ± 0.0004' (the metrics present)."""
  parts = [f'FID {results["fid"]:.3f}']
  if 'is' in results:
    parts.append(f'IS {results["is"]:.2f} ± {results["is_std"]:.2f}')
  if 'kid' in results:
    parts.append(f'KID {results["kid"]:.4f} ± {results["kid_std"]:.4f}')
  return ', '.join(parts)


def write_tensorboard(logdir: str, step: int, results: dict) -> None:
  """The metrics as TensorBoard scalars at `step` in `logdir` (workdir/eval: its own run)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  writer = metric_writers.create_default_writer(logdir, just_logging=not sharding.is_main_process())
  writer.write_scalars(step, {k: float(v) for k, v in results.items()})
  writer.flush()
  writer.close()


def evaluate_workdir(config, workdir: str, *, step=None, best: bool = False, arrays=None,
                     extractor=None) -> dict:
  """Evaluates the EMA generator of the latest (or `step`, or best-FID) checkpoint.

  Writes workdir/eval/step_<step>.json (metrics, sample count, checkpoint, date) and prints one
  line; returns the JSON record. `arrays` / `extractor` serve callers that hold their own data
  or feature network (tests, notebooks).
  """
  if arrays is None:
    _check_reference_source(config)
  mesh = sharding.create_mesh()
  state, generator = checkpoint.restore_for_inference(config, workdir, step=step, best=best)
  evaluator = train_eval.make_evaluator(config, generator, mesh, arrays=arrays,
                                        extractor=extractor)
  results = evaluator(state)
  found = int(jax.device_get(state.step))
  record = {
      'step': found,
      'checkpoint': 'best' if best else 'latest' if step is None else 'step',
      'num_samples': config.eval.num_samples,
      'seed': config.eval.seed,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      **{k: float(v) for k, v in results.items()},
  }
  path = epath.Path(workdir) / 'eval' / f'step_{found:08d}{"_best" if best else ""}.json'
  if sharding.is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + '\n')
  write_tensorboard(str(path.parent), found, results)
  print(f'{describe(results)} at step {found} ({config.eval.num_samples} samples, '
        f'{results["eval_seconds"]:.0f} s); wrote {path}', flush=True)
  return record
