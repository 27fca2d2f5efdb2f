"""FID of a generator during training and from a workdir (vitgan_jax/evaluation/train_eval.py,
inference.eval_mode), with a tiny exact feature network standing in for the Inception."""

import json
import os

import jax
import numpy as np
import pytest

from tests.evaluation.test_metrics import TinyFeatures, _direct_fid, _tiny_numpy
from tests.helpers import RecordingWriter, real_images
from tests.helpers import tiny_eval_config as tiny_config
from vitgan_jax import errors, inference, input_pipeline, sharding, trainer
from vitgan_jax.evaluation import features, metrics, train_eval
from vitgan_jax.gan import GAN


def tiny_extractor(mesh=None):
  return features.FeatureExtractor({'w': np.ones((6, 4), np.float32)}, batch_size=8, mesh=mesh,
                                  model=TinyFeatures())


def initial_state(config, mesh):
  gan = GAN.from_config(config)
  return gan, gan.init_on(mesh, 0)


def test_evaluator_equals_fid_written_out():
  """Same z as the evaluator draws (fixed seed, one split per batch), samples to uint8, FID."""
  config = tiny_config()
  mesh = sharding.create_mesh()
  gan, state = initial_state(config, mesh)
  data = real_images()
  evaluator = train_eval.make_evaluator(config, gan, mesh, data=input_pipeline.Data(config, data),
                                        extractor=tiny_extractor(mesh))
  results = evaluator(state)
  assert set(results) == {'fid', 'kid', 'kid_std', 'is', 'is_std', 'layout_similarity',
                          'eval_seconds'}

  key, samples = jax.random.PRNGKey(config.eval.seed), []
  for _ in range(2):  # 12 samples in batches of 8, the surplus dropped
    key, sub = jax.random.split(key)
    z = jax.random.normal(sub, (8, config.model.generator.latent_dim))
    x = np.asarray(gan.generator.apply({'params': state.ema_params, **state.g_state}, z))
    samples.append(np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8))
  samples = np.concatenate(samples)[:12]
  assert samples.std() > 0
  expected = _direct_fid(_tiny_numpy(samples), _tiny_numpy(data[:20]))
  assert results['fid'] == pytest.approx(expected, rel=1e-5)
  assert evaluator(state)['fid'] == results['fid']  # the same z every time
  # Layout sameness of the first batch, the same 8 images (a pixel may round the other way).
  assert results['layout_similarity'] == pytest.approx(
      metrics.layout_similarity(samples[:8]), rel=1e-3)


def test_reference_stats_cached_by_dataset_and_weights(tmp_path, monkeypatch):
  monkeypatch.setenv('VITGAN_CACHE', str(tmp_path / 'cache'))
  np.savez(tmp_path / 'train.npz', x=real_images())
  config = tiny_config()
  config.data.source, config.data.path = 'npz', str(tmp_path / 'train.npz')
  extractor = tiny_extractor()
  first = train_eval.load_reference_stats(config, extractor)
  cached = list((tmp_path / 'cache' / 'fid_stats').iterdir())
  assert len(cached) == 1 and 'train-' in cached[0].name and '16px-20' in cached[0].name
  np.testing.assert_allclose(first.mu, _tiny_numpy(real_images()[:20]).mean(0), rtol=1e-6)

  def no_reads(*args, **kwargs):
    raise AssertionError('cached statistics were recomputed')
  monkeypatch.setattr('vitgan_jax.input_pipeline.load_images', no_reads)
  again = train_eval.load_reference_stats(config, extractor)
  np.testing.assert_array_equal(again.sigma, first.sigma)

  config.eval.reference_stats = str(tmp_path / 'mine' / 'ref.npz')  # explicit file: used as is
  metrics.Stats(mu=first.mu + 1, sigma=first.sigma, num=20).save(config.eval.reference_stats)
  np.testing.assert_array_equal(
      train_eval.load_reference_stats(config, extractor).mu, first.mu + 1)


def test_missing_inception_weights_is_a_one_line_config_error(tmp_path, monkeypatch):
  monkeypatch.setenv('VITGAN_CACHE', str(tmp_path))
  monkeypatch.delenv('VITGAN_INCEPTION_PT', raising=False)
  with pytest.raises(errors.ConfigError, match='pt_inception-2015-12-05.*default_1.pt'):
    train_eval.feature_extractor(tiny_config(), sharding.create_mesh())


def test_inception_batch_fits_the_memory_and_evaluation_says_what_it_does(monkeypatch,
                                                                          capsys):
  monkeypatch.setattr(train_eval.weights, 'load_inception_params',
                      lambda path: {'w': np.ones((6, 4), np.float32)})
  monkeypatch.setattr(features, 'available_memory_bytes', lambda device=None: 2 ** 30)
  config = tiny_config()
  config.eval.batch_size = 500
  extractor = train_eval.feature_extractor(config, sharding.create_mesh())
  per_image = features.INCEPTION_BYTES_PER_IMAGE
  assert extractor.batch_size == min(500, int(2 ** 30 * features.MEMORY_FRACTION // per_image))
  assert f'FID Inception batch {extractor.batch_size} instead of eval.batch_size=500' in (
      capsys.readouterr().out)

  monkeypatch.setattr(features, 'PROGRESS_QUIET_SECONDS', 0.0)
  config = tiny_config(num_samples=24)
  mesh = sharding.create_mesh()
  gan, state = initial_state(config, mesh)
  evaluator = train_eval.make_evaluator(config, gan, mesh,
                                        data=input_pipeline.Data(config, real_images()),
                                        extractor=tiny_extractor(mesh))
  out = capsys.readouterr().out
  assert 'Computing FID reference statistics of 20 images' not in out  # arrays: no cache
  evaluator(state)
  out = capsys.readouterr().out.splitlines()
  assert out[0] == 'Evaluating FID on 24 samples (Inception batch 8) ...'
  assert [line.split(' (')[0] for line in out[1:4]] == [
      'samples: 33%', 'samples: 67%', 'samples: 100%']
  assert all('images/s, ETA' in line for line in out[1:4])
  assert out[4:] == ['samples: features done; statistics, Frechet distance, KID ...']


def test_eval_mode_without_reference_data_says_what_to_set(tmp_path):
  with pytest.raises(errors.ConfigError, match='eval.reference_stats'):
    inference.eval_mode(tiny_config(), str(tmp_path))


def test_training_logs_fid_keeps_best_and_eval_mode_reproduces_it(tmp_path, monkeypatch,
                                                                  capsys):
  """2 steps with FID at each: scalars logged, checkpoints_best kept; --mode eval's JSON on the
  best checkpoint gives the FID that training logged for it."""
  monkeypatch.setattr(train_eval, 'feature_extractor',
                      lambda config, mesh: tiny_extractor(mesh))
  config = tiny_config()
  config.training.num_steps, config.eval.every_steps = 2, 1
  config.logging.every_steps, config.checkpoint.every_steps = 1, 1
  writer = RecordingWriter()
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir, data=input_pipeline.Data(config, real_images()),
                             writer=writer, announce=True)
  logged = writer.scalars
  fids = {step: logged[step]['fid'] for step in (1, 2)}
  assert all(np.isfinite(list(fids.values()))) and 'kid' in logged[2] and 'is' in logged[2]
  best_step = min(fids, key=fids.get)
  assert os.listdir(os.path.join(workdir, 'checkpoints_best')) == [str(best_step)]

  record = inference.eval_mode(config, workdir, best=True,
                               data=input_pipeline.Data(config, real_images()),
                               extractor=tiny_extractor())
  assert record['step'] == best_step and record['checkpoint'] == 'best'
  assert record['fid'] == pytest.approx(fids[best_step], rel=1e-6)
  path = os.path.join(workdir, 'eval', f'step_{best_step:08d}_best.json')
  with open(path) as f:
    assert json.load(f)['fid'] == record['fid']

  out = capsys.readouterr().out
  assert "Training on 24 images given in memory (data.source='arrays'), 16x16x3" in out
  # The last act, an evaluation, is announced as such (once), then says what it does.
  lines = out.splitlines()
  last = 'Trained 2 of 2 steps; the run ends with an evaluation (eval.num_samples=12) ...'
  assert lines.count(last) == 1
  assert lines[lines.index(last) + 1].startswith('Evaluating FID on 12 samples')
  assert lines.index(last) > max(i for i, l in enumerate(lines) if l.startswith('step 2/2'))
  summary = [line for line in out.splitlines() if line.startswith('Finished at step 2 of 2')]
  assert len(summary) == 1 and '16 images seen' in summary[0] and 'FID ' in summary[0]
  assert f'TensorBoard: tensorboard --logdir {workdir}' in summary[0]
  assert 'curves.png' in summary[0] and 'd_loss' in summary[0]
  # The curves beside the event files: FID at steps 1 and 2, D logits at each logged step.
  with open(os.path.join(workdir, 'curves.json')) as f:
    points = json.load(f)
  assert [(p['step'], p['images']) for p in points if 'fid' in p] == [(1, 8), (2, 16)]
  assert [p['step'] for p in points if 'd_real' in p and 'd_fake' in p] == [1, 2]
  with open(os.path.join(workdir, 'curves.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # --mode eval's metrics in TensorBoard too, under workdir/eval.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(os.path.join(workdir, 'eval'))
  events.Reload()
  tags = events.Tags()
  logged_fid = (events.Scalars('fid') if 'fid' in tags.get('scalars', []) else
                [e for e in events.Tensors('fid')] if 'fid' in tags.get('tensors', []) else [])
  assert [e.step for e in logged_fid] == [best_step], tags


EIGHT_DEVICES = '''
import jax, sys
sys.path.insert(0, {root!r})
from tests.evaluation import test_train_eval as t
from vitgan_jax import input_pipeline, sharding
from vitgan_jax.evaluation import train_eval
assert jax.device_count() == 8
config = t.tiny_config(num_samples=20)
fids = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = sharding.create_mesh(devices)
  gan, state = t.initial_state(config, mesh)
  evaluator = train_eval.make_evaluator(config, gan, mesh,
                                        data=input_pipeline.Data(config, t.real_images()),
                                        extractor=t.tiny_extractor(mesh))
  fids.append(evaluator(state)['fid'])
print('FIDS', fids)
assert abs(fids[0] - fids[1]) <= 1e-4 * fids[0], fids
print('OK')
'''


def test_evaluator_on_eight_devices_equals_one_device():
  """Samples sharded over 8 devices (batch 8 -> 1 per device) give the 1-device FID."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  result = subprocess.run([sys.executable, '-c', EIGHT_DEVICES.format(root=root)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=root)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr[-3000:]


TWO_PROCESSES = '''
import sys
sys.path.insert(0, {root!r})
import jax
{init}
from tests.evaluation import test_train_eval as t
from vitgan_jax import input_pipeline, sharding
from vitgan_jax.evaluation import train_eval
assert jax.device_count() == 4
config = t.tiny_config(num_samples=20)
mesh = sharding.create_mesh()
gan, state = t.initial_state(config, mesh)
evaluator = train_eval.make_evaluator(config, gan, mesh,
                                      data=input_pipeline.Data(config, t.real_images()),
                                      extractor=t.tiny_extractor(mesh))
print('FID', repr(evaluator(state)['fid']), flush=True)
'''


def test_evaluator_on_two_processes_equals_one_process():
  """jax.distributed over 2 CPU processes (2 devices each), as on a 2-host pod: both report the
  FID that one process over the same 4-device mesh computes."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  code = TWO_PROCESSES.format(
      root=root, init=f"jax.distributed.initialize('localhost:{port}', 2, int(sys.argv[1]))")
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2')
  procs = [subprocess.Popen([sys.executable, '-c', code, str(i)], env=env, cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  fids = []
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, out + err[-3000:]
    fids += [float(line.split()[1]) for line in out.splitlines() if line.startswith('FID ')]
  single = subprocess.run(  # one process, the same 4-device mesh
      [sys.executable, '-c', TWO_PROCESSES.format(root=root, init='')],
      env=dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=4'), cwd=root, text=True,
      capture_output=True, timeout=600)
  assert single.returncode == 0, single.stdout + single.stderr[-3000:]
  expected, = [float(line.split()[1]) for line in single.stdout.splitlines()
               if line.startswith('FID ')]  # the evaluator's own lines say 'Evaluating FID ...'
  assert len(fids) == 2 and fids[0] == fids[1] == pytest.approx(expected, rel=1e-6), (fids, expected)


def test_time_budget_ends_with_one_evaluation_when_logging_runs_the_clock_out(
    tmp_path, monkeypatch):
  """The log line's device sync can carry the clock past both max_train_seconds and the next
  timed evaluation: the run then ends at that step with one evaluation, not two a step apart."""
  monkeypatch.setattr(train_eval, 'feature_extractor',
                      lambda config, mesh: tiny_extractor(mesh))

  class FakeClock:  # training time moves only when a log line is written: 100 s per line
    now = 0.0

    def seconds(self):
      return FakeClock.now

    @staticmethod
    def pause():
      import contextlib  # pylint: disable=g-import-not-at-top
      return contextlib.nullcontext()

  line = trainer.progress_line

  def slow_line(*args, **kwargs):
    FakeClock.now += 100.0
    return line(*args, **kwargs)

  monkeypatch.setattr(trainer, 'TrainClock', FakeClock)
  monkeypatch.setattr(trainer, 'progress_line', slow_line)
  config = tiny_config()
  config.training.num_steps, config.training.max_train_seconds = 50, 100.0
  config.eval.every_steps, config.eval.every_seconds = 0, 100.0
  config.logging.every_steps, config.checkpoint.every_steps = 3, 1000
  writer = RecordingWriter()
  trainer.train_and_evaluate(config, str(tmp_path / 'run'), writer=writer,
                             data=input_pipeline.Data(config, real_images()))
  evaluated = sorted(step for step, scalars in writer.scalars.items() if 'fid' in scalars)
  assert evaluated == [0, 3]  # step 0 (a timed run's baseline) and the last step, once
