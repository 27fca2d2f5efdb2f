"""Tests for vitgan_jax/checkpoint.py: keep-K, best-FID, fallback past corrupt files, config.json.

Small pytrees stand in for the TrainState (the Checkpointer saves any flax state dict), so no
model is compiled here; tests/test_reliability.py runs the real loop.
"""

import hashlib
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from vitgan_jax import checkpoint, errors, run_record


# Orbax leaves the coroutines of a failed read to the garbage collector: harmless, noisy.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def _tree(seed, rows=4):
  rng = np.random.default_rng(seed)
  return {'params': {'w': jnp.asarray(rng.normal(size=(rows, 3)), jnp.float32),
                     'b': jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
          'opt': {'count': jnp.asarray(seed, jnp.int32),
                  'mu': jnp.asarray(rng.normal(size=(4096,)), jnp.float32)},
          'g_state': {}}


def _assert_trees_equal(a, b):
  a, b = jax.device_get(a), jax.device_get(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _snapshot(root):
  """{relative path: sha256} of every file under root: proves nothing was changed."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


def _save_steps(workdir, steps, keep=5):
  ckpt = checkpoint.Checkpointer(str(workdir), keep=keep)
  for step in steps:
    ckpt.save(step, _tree(step))
  ckpt.wait()
  ckpt.close()


def _largest_file(step_dir):
  files = [p for p in pathlib.Path(step_dir).rglob('*') if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _truncate(path, fraction=0.5):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(int(size * fraction))


def test_save_restore_exact_and_keeps_last_k(tmp_path):
  _save_steps(tmp_path, range(1, 6), keep=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.all_steps() == [4, 5]
  _assert_trees_equal(ckpt.restore(_tree(0), step=4), _tree(4))
  state, step, unreadable = ckpt.restore_latest(_tree(0))
  assert (step, unreadable) == (5, [])
  _assert_trees_equal(state, _tree(5))


def test_no_checkpoint_writes_nothing(tmp_path):
  workdir = tmp_path / 'fresh'
  ckpt = checkpoint.Checkpointer(str(workdir))
  state, step, unreadable = ckpt.restore_latest(_tree(0))
  assert step is None and unreadable == [] and state is not None
  with pytest.raises(errors.CheckpointError, match='no checkpoint in'):
    ckpt.restore(_tree(0))
  ckpt.close()
  assert not workdir.exists()


def test_save_best_keeps_lowest_fid(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  kept = [ckpt.save_best(step, _tree(step), fid)
          for step, fid in [(1, 5.0), (2, 3.0), (3, 4.0), (4, float('nan')), (5, 3.0)]]
  ckpt.wait()
  assert kept == [True, True, False, False, False]
  assert sorted(os.listdir(tmp_path / 'checkpoints_best')) == ['2']
  ckpt.close()
  reopened = checkpoint.Checkpointer(str(tmp_path))  # the best FID survives a restart
  assert reopened.best_fid() == 3.0
  _assert_trees_equal(reopened.restore(_tree(0), best=True), _tree(2))
  assert not reopened.save_best(6, _tree(6), 3.5)
  assert reopened.save_best(7, _tree(7), 2.5)
  reopened.wait()
  assert sorted(os.listdir(tmp_path / 'checkpoints_best')) == ['7']
  assert reopened.all_steps() == []  # best saves never enter the latest-K rotation


def test_truncating_any_file_falls_back_or_restores_exactly(tmp_path):
  """Each file of the newest checkpoint cut in half in turn: never a silently wrong state."""
  base = tmp_path / 'base'
  _save_steps(base, [1, 2, 3])
  files = sorted(p.relative_to(base) for p in (base / 'checkpoints' / '3').rglob('*')
                 if p.is_file())
  detected = []
  for i, relative in enumerate(files):
    workdir = tmp_path / f'cut_{i}'
    shutil.copytree(base, workdir)
    _truncate(workdir / relative)
    before = _snapshot(workdir)
    ckpt = checkpoint.Checkpointer(str(workdir))
    state, step, unreadable = ckpt.restore_latest(_tree(0))
    ckpt.close()
    if step == 3:  # a file restore does not read (e.g. commit markers)
      _assert_trees_equal(state, _tree(3))
    else:
      assert step == 2 and [s for s, _ in unreadable] == [3], relative
      _assert_trees_equal(state, _tree(2))
      detected.append(str(relative.relative_to('checkpoints/3')))
    assert _snapshot(workdir) == before  # reading never repairs or deletes anything
  # The array data (> 1 KiB values live in the per-process OCDBT files), the tree metadata
  # and the OCDBT manifest are all checked.
  assert {'default/_METADATA', 'default/manifest.ocdbt'} <= set(detected)
  assert any(d.startswith('default/ocdbt.process_0/d/') for d in detected)


def test_move_aside_frees_the_step_for_the_resumed_run(tmp_path):
  _save_steps(tmp_path, [1, 2, 3])
  _truncate(tmp_path / 'checkpoints' / '3' / 'default' / '_METADATA')
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  _, step, _ = ckpt.restore_latest(_tree(0))
  assert step == 2
  with pytest.raises(errors.CheckpointError, match='checkpoint step 3 .* is unreadable'):
    ckpt.restore(_tree(0), step=3)
  moved_to = ckpt.move_aside([3])
  assert moved_to == str(tmp_path / 'checkpoints_unreadable')
  assert (tmp_path / 'checkpoints_unreadable' / '3' / 'default').is_dir()
  assert ckpt.all_steps() == [1, 2]
  ckpt.save(3, _tree(30))
  ckpt.wait()
  _assert_trees_equal(ckpt.restore(_tree(0)), _tree(30))
  ckpt.close()


def test_move_aside_deletes_when_the_store_cannot_rename(tmp_path, monkeypatch):
  _save_steps(tmp_path, [1, 2])
  def refuse(*args, **kwargs):
    raise OSError('rename of folders is not supported')
  monkeypatch.setattr(type(checkpoint.epath.Path(str(tmp_path))), 'rename', refuse)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.move_aside([2]) is None
  assert ckpt.all_steps() == [1] and not (tmp_path / 'checkpoints' / '2').exists()
  monkeypatch.undo()  # Orbax commits a save by renaming its temporary folder
  ckpt.save(2, _tree(20))
  ckpt.wait()
  _assert_trees_equal(ckpt.restore(_tree(0)), _tree(20))
  ckpt.close()


def test_every_checkpoint_unreadable_is_an_error(tmp_path):
  _save_steps(tmp_path, [1])
  _truncate(_largest_file(tmp_path / 'checkpoints' / '1'), 0.0)
  before = _snapshot(tmp_path)
  with pytest.raises(errors.CheckpointError, match=r'no readable checkpoint in .*step 1: '):
    checkpoint.Checkpointer(str(tmp_path)).restore_latest(_tree(0))
  assert _snapshot(tmp_path) == before


def test_other_model_is_refused_naming_config_keys(tmp_path):
  saved_config = default.get_config()
  run_record.write(str(tmp_path), saved_config)
  _save_steps(tmp_path, [1, 2])
  config = default.get_config()
  config.model.generator.width = 512
  config.logging.every_steps = 7  # harmless: not named as a cause
  before = _snapshot(tmp_path)
  with pytest.raises(errors.IncompatibleCheckpointError) as info:
    checkpoint.Checkpointer(str(tmp_path)).restore_latest(_tree(0, rows=5), config)
  message = str(info.value)
  assert 'holds a checkpoint (step 2) of a different model' in message
  assert 'model.generator.width 384 -> 512' in message
  assert 'logging.every_steps' not in message
  assert 'params/w (4, 3)float32 in checkpoint vs (5, 3)float32' in message
  assert '\n' not in message
  assert _snapshot(tmp_path) == before  # no fallback to step 1: a shape mismatch is not corruption


def test_checkpoint_before_a_later_field_restores_with_its_initial_value(tmp_path, capsys):
  _save_steps(tmp_path, [3])  # written without 'augment_p'
  template = {**_tree(0), 'augment_p': jnp.asarray(0.25, jnp.float32)}
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  restored = ckpt.restore(template, step=3)
  _assert_trees_equal({k: v for k, v in restored.items() if k != 'augment_p'}, _tree(3))
  assert float(restored['augment_p']) == 0.25
  assert "predates the state field 'augment_p'" in capsys.readouterr().out
  # Any other missing field is still a different model.
  with pytest.raises(errors.IncompatibleCheckpointError, match='opt/nu missing'):
    ckpt.restore({**template, 'opt': {**template['opt'], 'nu': template['opt']['mu']}}, step=3)


def test_shape_differences_lists_missing_extra_and_changed():
  saved = {'a': jnp.zeros((2,)), 'b': jnp.zeros((3,)), 'c': {'d': jnp.zeros((1,), jnp.int32)}}
  expected = {'a': jnp.zeros((2,)), 'c': {'d': jnp.zeros((1,))}, 'e': jnp.zeros(())}
  assert checkpoint.shape_differences(saved, expected) == [
      'e missing from checkpoint', 'b only in checkpoint',
      'c/d (1,)int32 in checkpoint vs (1,)float32']


def test_config_differences_classified():
  config = default.get_config()
  record = {'config': run_record.config_as_dict(config)}
  config.training.num_steps = 10
  config.logging.every_steps = 5
  config.eval.every_steps = 100
  config.optimizer.g.lr = 0.001
  differences = run_record.config_differences(record, config)
  assert [k for k, _, _ in differences] == ['eval.every_steps', 'logging.every_steps',
                                            'optimizer.g.lr', 'training.num_steps']
  assert [run_record.is_harmless(k) for k, _, _ in differences] == [True, True, False, True]
  assert run_record.describe_differences(differences[2:]) == (
      'optimizer.g.lr 0.002 -> 0.001, training.num_steps 500000 -> 10')
  assert run_record.config_differences(None, config) == []


def test_write_run_config_records_config_revision_and_resumes(tmp_path):
  config = default.get_config()
  run_record.write(str(tmp_path), config)
  config.training.num_steps = 7
  differences = run_record.config_differences(run_record.read(str(tmp_path)), config)
  run_record.write(str(tmp_path), config, resumed_at=3, differences=differences)
  record = json.loads((tmp_path / 'config.json').read_text())
  assert record['config'] == run_record.config_as_dict(config)
  assert record['config']['training']['num_steps'] == 7
  assert 'git_revision' in record and record['device_count'] == jax.device_count()
  assert record['resumes'] == [{'step': 3, 'git_revision': record['resumes'][0]['git_revision'],
                                'changed': {'training.num_steps': [500000, 7]}}]


def test_orbax_info_chatter_is_off_warnings_pass(tmp_path):
  """At absl verbosity INFO (a notebook's setting), saves and restores log no Orbax INFO line."""
  import logging as pylogging  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  class Keep(pylogging.Handler):
    def __init__(self):
      super().__init__(pylogging.DEBUG)
      self.records = []

    def emit(self, record):
      self.records.append(record)

  keep, root, verbosity = Keep(), pylogging.getLogger(), logging.get_verbosity()
  root.addHandler(keep)
  logging.set_verbosity(logging.INFO)
  try:
    _save_steps(tmp_path, [1, 2])
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    _assert_trees_equal(ckpt.restore_latest(_tree(0))[0], _tree(2))
    ckpt.close()
    logging.info('our own INFO line')  # absl's INFO itself still reaches the handlers
    logging.warning('an Orbax warning')  # (from this file: the filter keys on Orbax's files)
    orbax = [r for r in keep.records if f'{os.sep}orbax{os.sep}' in r.pathname]
    assert not [r.getMessage()[:100] for r in orbax if r.levelno < pylogging.WARNING]
    assert [r.getMessage() for r in keep.records if r.name == 'absl'][-2:] == [
        'our own INFO line', 'an Orbax warning']
    record = pylogging.LogRecord('absl', pylogging.WARNING, f'{os.sep}x{os.sep}orbax{os.sep}y.py',
                                 1, 'disk trouble', (), None)
    assert pylogging.getLogger('absl').filter(record)  # Orbax's warnings pass
  finally:
    root.removeHandler(keep)
    logging.set_verbosity(verbosity)
